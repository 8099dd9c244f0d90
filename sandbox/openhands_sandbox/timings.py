"""How long each of the sandbox's own steps took before `ready`, sent with it (`timings`).

The service puts them beside its own hops (`start_hops` on the conversation): where a start's
seconds went inside the sandbox (docs/performance.md). Durations only, on this process's
monotonic clock: nothing of the conversation, no secret.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

STEPS = (
    "assignment_to_start",  # warm: the assignment received -> the settings read (token opened)
    "process_to_start",  # cold: the bootstrap's import -> the settings read (token opened)
    "phase_reports",  # the five phase calls to the service, together
    "context_fetch",
    "users",  # cold: the users, directories and the agent-server's spawn (a pool sandbox did it idle)
    "clone",
    "setup_script",
    "git_hooks",
    "head_commit",
    "agent_server",  # what is left of its boot after the hooks (cold); warm: the booted one checked
    "conversation_create",  # POST /api/conversations on the agent-server
)
"""Every name a sandbox may report, in the order they happen (the service refuses others)."""

PROCESS_STARTED = time.monotonic()
"""When the bootstrap's modules were imported: a cold task's first moment of Python."""


class StepTimer:
    """Seconds per step, summed when a step runs more than once (the phase reports)."""

    def __init__(self, began: float | None = None) -> None:
        self.began = time.monotonic() if began is None else began
        self.seconds: dict[str, float] = {}

    def add(self, step: str, seconds: float) -> None:
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}")
        self.seconds[step] = self.seconds.get(step, 0.0) + max(seconds, 0.0)

    def since_began(self, step: str) -> None:
        """``step`` took from ``began`` to now."""
        self.add(step, time.monotonic() - self.began)

    @contextmanager
    def step(self, step: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(step, time.monotonic() - started)

    def report(self) -> dict[str, float]:
        """In STEPS order, rounded to milliseconds."""
        return {step: round(self.seconds[step], 3) for step in STEPS if step in self.seconds}


__all__ = ["PROCESS_STARTED", "STEPS", "StepTimer"]
