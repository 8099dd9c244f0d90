"""Where a start's seconds went: the hops from QUEUED to READY, recorded by MarkRunning.

The service's hops are differences of its own timestamps (the timeline, `launched_at`, the time
`ready` arrived, READY), so they add up to the timeline's QUEUED -> READY. A hop whose two ends
were not both recorded is left out. The sandbox's hops are the durations it reported with
`ready` (sandbox/openhands_sandbox/timings.py), on its own clock: they split the service's
`in_sandbox` hop (and, before it, part of `to_sandbox`). docs/performance.md has the table.
"""

from __future__ import annotations

from datetime import datetime
from typing import get_args

from conversation_service.models.context import SandboxReady, SandboxStep
from conversation_service.models.domain import Conversation, RuntimeStatus, StartHop

SERVICE_HOPS = (
    "stream_to_workflow",  # QUEUED -> INITIALIZING_CONTEXT: the stream, its consumer, the execution's start
    "initialize_context",  # InitializeContext, then the transition to LaunchSandbox
    "claim_or_run_task",  # LaunchSandbox: the pool claim (warm) or RunTask (cold)
    "to_sandbox",  # until the sandbox's first phase: assignment delivery (warm) or the task's start (cold)
    "in_sandbox",  # RUNTIME_STARTED -> `ready` received: context, clone, setup, hooks, conversation
    "ready_to_running",  # `ready` -> MarkRunning's write: the task token's success, the next step
)


def _parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def _at(timestamp: str | None) -> datetime | None:
    return _parse(timestamp) if timestamp else None


def _milliseconds(began: datetime | None, ended: datetime | None) -> int | None:
    if began is None or ended is None:
        return None
    return max(0, round((ended - began).total_seconds() * 1000))


def start_hops(conversation: Conversation, ready: SandboxReady, running_at: str) -> list[StartHop]:
    """The service's hops in order, then the sandbox's steps in the order they ran."""
    first: dict[str, datetime] = {}
    for entry in conversation.timeline:  # this run's (a later run's timeline starts again at QUEUED)
        if entry.phase == RuntimeStatus.QUEUED.value:
            first = {}
        first.setdefault(entry.phase, _parse(entry.at))
    points = [
        first.get(RuntimeStatus.QUEUED.value),
        first.get(RuntimeStatus.INITIALIZING_CONTEXT.value),
        first.get(RuntimeStatus.STARTING_RUNTIME.value),
        _at(conversation.launched_at),
        first.get(RuntimeStatus.RUNTIME_STARTED.value),
        _at(ready.reported_at),
        _at(running_at),
    ]
    hops: list[StartHop] = []
    for name, began, ended in zip(SERVICE_HOPS, points[:-1], points[1:], strict=True):
        milliseconds = _milliseconds(began, ended)
        if milliseconds is not None:
            hops.append(StartHop(hop=name, milliseconds=milliseconds, measured_by="service"))
    hops += [
        StartHop(hop=step, milliseconds=round(ready.timings[step] * 1000), measured_by="sandbox")
        for step in get_args(SandboxStep)
        if step in ready.timings
    ]
    return hops


__all__ = ["SERVICE_HOPS", "start_hops"]
