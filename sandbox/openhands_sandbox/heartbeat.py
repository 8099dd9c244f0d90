"""Background thread that tells the control plane the sandbox is still working."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from openhands_sandbox.control_plane import (
    ControlPlaneClient,
    ControlPlaneRejected,
    ControlPlaneUnavailable,
)
from openhands_sandbox.logs import fields

log = logging.getLogger(__name__)

JOIN_TIMEOUT_SECONDS = 20.0
"""Longer than one heartbeat request can take."""


class Heartbeat:
    """Sends a ``heartbeat`` event every ``interval_seconds`` until stopped.

    A 401/409 answer calls ``on_rejected`` once and ends the thread; other failures are
    logged and the next beat tries again.
    """

    def __init__(
        self,
        client: ControlPlaneClient,
        interval_seconds: float,
        on_rejected: Callable[[], None],
    ) -> None:
        self._client = client
        self._interval_seconds = interval_seconds
        self._on_rejected = on_rejected
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=JOIN_TIMEOUT_SECONDS)

    def _beat_until_stopped(self) -> None:
        while not self._stopped.wait(self._interval_seconds):
            try:
                self._client.send_heartbeat()
            except ControlPlaneRejected as rejected:
                log.warning("heartbeat rejected", extra=fields(status=rejected.status))
                self._on_rejected()
                return
            except (ControlPlaneUnavailable, OSError, ValueError) as problem:
                log.warning("heartbeat not delivered", extra=fields(problem=str(problem)))
