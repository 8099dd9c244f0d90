"""A conversation's start-up phases, with durations, read from its `timeline`.

Each timeline entry is a phase (a runtime status id) and the time it began; a phase lasts until
the next entry. `STATUS$READY`, `STATUS$ERROR` and `STATUS$STOPPED` end a run rather than begin a
phase; a conversation started again after a stop has a second run, and only the latest is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from itertools import pairwise

from openhands_conversations_client.models import ERROR, RUNNING, Conversation, TimelineEntry

READY_PHASE = "STATUS$READY"
ERROR_PHASE = "STATUS$ERROR"
STOPPED_PHASE = "STATUS$STOPPED"
RUN_ENDING_PHASES = frozenset({READY_PHASE, ERROR_PHASE, STOPPED_PHASE})

PHASE_LABELS = {
    "STATUS$QUEUED": "Queued",
    "STATUS$INITIALIZING_CONTEXT": "Initializing context",
    "STATUS$STARTING_RUNTIME": "Starting runtime",
    "STATUS$RUNTIME_STARTED": "Runtime started",
    "STATUS$SETTING_UP_WORKSPACE": "Setting up workspace",
    "STATUS$RUNNING_SETUP_SCRIPT": "Running setup script",
    "STATUS$SETTING_UP_GIT_HOOKS": "Setting up git hooks",
    "STATUS$STARTING_AGENT_SERVER": "Starting agent server",
    READY_PHASE: "Ready",
    ERROR_PHASE: "Error",
    STOPPED_PHASE: "Stopped",
}


def phase_label(phase: str) -> str:
    """`STATUS$RUNNING_SETUP_SCRIPT` -> `Running setup script`; unknown ids are spelled out the same way."""
    if phase in PHASE_LABELS:
        return PHASE_LABELS[phase]
    words = phase.removeprefix("STATUS$").replace("_", " ").strip().lower()
    return words[:1].upper() + words[1:] if words else phase


class PhaseState(StrEnum):
    DONE = "done"
    CURRENT = "current"
    FAILED = "failed"  # the phase the conversation was in when it became ERROR
    INTERRUPTED = "interrupted"  # the phase it was in when it was stopped


@dataclass(frozen=True, slots=True)
class PhaseLine:
    phase: str
    started_at: datetime
    seconds: float  # how long it took, or for the current phase how long it has run so far
    state: PhaseState

    @property
    def label(self) -> str:
        return phase_label(self.phase)


@dataclass(frozen=True, slots=True)
class StartupProgress:
    """Where a conversation's latest start-up run is: its phases, and how it ended if it did."""

    phases: tuple[PhaseLine, ...]
    started_at: datetime | None
    ended_at: datetime | None  # when READY, ERROR or STOPPED was recorded
    elapsed_seconds: float  # from the run's first phase to its end (or to now)


def latest_run(timeline: tuple[TimelineEntry, ...]) -> tuple[TimelineEntry, ...]:
    """The entries of the latest run: after the end of the one before (a restart), up to its own end."""
    end = len(timeline)
    if end and timeline[-1].phase in RUN_ENDING_PHASES:
        end -= 1
    start = end
    while start > 0 and timeline[start - 1].phase not in RUN_ENDING_PHASES:
        start -= 1
    return timeline[start : end + 1]


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def startup_progress(conversation: Conversation, now: datetime) -> StartupProgress:
    """The phases of the conversation's latest run, timed by the service's own timestamps.

    `now` times the phase still under way (and the elapsed total of a run that has not ended).
    """
    run = latest_run(conversation.timeline)
    if not run:
        return StartupProgress((), None, None, 0.0)
    ending = run[-1] if run[-1].phase in RUN_ENDING_PHASES else None
    phases = run[:-1] if ending else run
    if ending is None and conversation.is_settled:
        # Settled without an ending entry (an older record): the last phase ended at the last update.
        end_time = conversation.updated_at or phases[-1].at
    else:
        end_time = ending.at if ending else now
    last_state = PhaseState.CURRENT
    if conversation.is_settled:
        last_state = {
            ERROR: PhaseState.FAILED,
            RUNNING: PhaseState.DONE,
        }.get(conversation.conversation_status, PhaseState.INTERRUPTED)
    lines = [
        PhaseLine(entry.phase, entry.at, _seconds(entry.at, following.at), PhaseState.DONE)
        for entry, following in pairwise(phases)
    ]
    if phases:
        lines.append(PhaseLine(phases[-1].phase, phases[-1].at, _seconds(phases[-1].at, end_time), last_state))
    return StartupProgress(
        phases=tuple(lines),
        started_at=run[0].at,
        ended_at=ending.at if ending else (end_time if conversation.is_settled else None),
        elapsed_seconds=_seconds(run[0].at, end_time),
    )


def format_seconds(seconds: float) -> str:
    """`0.4s`, `12.3s`, `2m05s`, `1h02m`: short enough for a column, exact enough to compare."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
