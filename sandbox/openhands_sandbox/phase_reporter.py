"""Phase reports sent in order by a thread of their own, so the start does not wait for them.

Each `POST /v1/events` phase is a round trip through the service (a DynamoDB write and a Step
Functions heartbeat): five of them on the way to `ready` took 1.8 s of a warm start on a busy
machine. The bootstrap queues a phase and goes on with it; the thread sends the queue oldest
first. `ready` and `failed` wait until every phase before them is sent (`flush`), so the service
still sees the five phases, in order, before the end. A rejection (401/409: the conversation is
over) requests a stop at once, and any failure is raised again in the bootstrap at its next
phase or flush, as the synchronous call raised it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from openhands_sandbox.control_plane import ControlPlaneClient, ControlPlaneRejected, Phase
from openhands_sandbox.errors import StopReason
from openhands_sandbox.lifecycle import StopController
from openhands_sandbox.logs import fields

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_SECONDS = 120.0
"""Longer than the client's own retries of one call (4 attempts of 15 s, with backoff)."""


class PhaseReporter:
    def __init__(self, client: ControlPlaneClient, stop: StopController) -> None:
        self._client = client
        self._stop = stop
        self._pending: deque[Phase] = deque()
        self._lock = threading.Condition()
        self._sending = False
        self._error: Exception | None = None
        self._thread: threading.Thread | None = None

    def report(self, phase: Phase) -> None:
        """Queue ``phase`` (after raising what an earlier report ran into)."""
        with self._lock:
            self._raise_if_failed()
            self._pending.append(phase)
            self._lock.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._send_all, name="phase-reports", daemon=True)
                self._thread.start()

    def flush(self, timeout_seconds: float = FLUSH_TIMEOUT_SECONDS) -> None:
        """Wait until every queued phase was sent; raise what sending one ran into."""
        with self._lock:
            if not self._lock.wait_for(
                lambda: self._error is not None or (not self._pending and not self._sending), timeout_seconds
            ):
                raise TimeoutError("the phase reports were not sent in time")
            self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _send_all(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._pending))
                phase = self._pending[0]
                self._sending = True
            try:
                self._client.send_phase(phase)
            except Exception as error:  # handed to the bootstrap's thread
                log.warning("phase report failed", extra=fields(phase=phase.value, problem=str(error)))
                if isinstance(error, ControlPlaneRejected):
                    self._stop.request(StopReason.REJECTED)
                with self._lock:
                    self._error = error
                    self._pending.clear()
                    self._sending = False
                    self._lock.notify_all()
                return
            with self._lock:
                self._pending.popleft()
                self._sending = False
                self._lock.notify_all()


__all__ = ["PhaseReporter"]
