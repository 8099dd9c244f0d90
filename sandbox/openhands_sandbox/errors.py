"""Failures the sandbox reports to the control plane, and the reasons it stops early."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Error codes of the ``failed`` event (docs/sandbox-protocol.md)."""

    CLONE_FAILED = "CLONE_FAILED"
    REF_NOT_FOUND = "REF_NOT_FOUND"
    REPO_AUTH_FAILED = "REPO_AUTH_FAILED"
    SETUP_SCRIPT_FAILED = "SETUP_SCRIPT_FAILED"
    GIT_HOOKS_FAILED = "GIT_HOOKS_FAILED"
    RUNTIME_UNHEALTHY = "RUNTIME_UNHEALTHY"
    INTERNAL = "INTERNAL"


class SandboxFailure(Exception):
    """A failure to report as a ``failed`` event: a code, a sentence for a person, details."""

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class StopReason(StrEnum):
    """Why the sandbox stops before its work is done."""

    SIGNAL = "signal"
    """SIGTERM or SIGINT: the container is being stopped."""

    REJECTED = "rejected"
    """The control plane answered 401 or 409: this sandbox is no longer wanted."""


class StopRequested(Exception):
    """Raised where work is abandoned because a stop was requested."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(f"stop requested: {reason}")
        self.reason = reason
