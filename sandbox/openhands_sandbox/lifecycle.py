"""Stop requests shared by the main thread, the heartbeat thread and signal handlers."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from openhands_sandbox.errors import StopReason, StopRequested


class StopController:
    """A one-way switch: once a stop is requested, every wait returns early.

    Long-running steps poll it (``raise_if_requested``), so a stop never needs to interrupt
    a thread; the first reason given wins.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason: StopReason | None = None

    def request(self, reason: StopReason) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> StopReason | None:
        with self._lock:
            return self._reason

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True as soon as a stop is requested."""
        return self._event.wait(timeout)

    def raise_if_requested(self) -> None:
        reason = self.reason
        if reason is not None:
            raise StopRequested(reason)


def install_stop_signal_handlers(stop: StopController) -> None:
    """Turn SIGTERM and SIGINT into a stop request (must run in the main thread)."""

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.request(StopReason.SIGNAL)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
