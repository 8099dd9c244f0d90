"""Client of the sandbox callback API: the context, phase events, and the channel to a running
conversation (agent events and status out, inbox in, the workspace report)."""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from openhands_sandbox.errors import SandboxFailure
from openhands_sandbox.http_client import http_request, open_http
from openhands_sandbox.logs import Redactor, fields

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 15.0
DEFAULT_ATTEMPTS = 4
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
REJECTING_STATUSES = frozenset({401, 409, 410})


class Phase(StrEnum):
    RUNTIME_STARTED = "STATUS$RUNTIME_STARTED"
    SETTING_UP_WORKSPACE = "STATUS$SETTING_UP_WORKSPACE"
    RUNNING_SETUP_SCRIPT = "STATUS$RUNNING_SETUP_SCRIPT"
    SETTING_UP_GIT_HOOKS = "STATUS$SETTING_UP_GIT_HOOKS"
    STARTING_AGENT_SERVER = "STATUS$STARTING_AGENT_SERVER"


class ControlPlaneRejected(Exception):
    """401 (token no longer valid), 409 (conversation no longer starting) or 410 (pool sandbox
    retired): stop now."""

    def __init__(self, status: int) -> None:
        super().__init__(f"control plane answered {status}")
        self.status = status


class ControlPlaneUnavailable(Exception):
    """The callback API could not be reached, or kept failing, or answered nonsense."""


class ControlPlaneRefused(ControlPlaneUnavailable):
    """A final answer other than 401/409 (400, 404, 413...): sending the same again cannot help."""

    def __init__(self, status: int, message: str, msg_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.msg_id = msg_id
        """The ``msg_id`` of the service's error body, if it sent one."""


@dataclass(frozen=True)
class ReadyReport:
    agent_server_url: str
    agent_conversation_id: str
    workspace_dir: str
    commit: str | None
    microagents: list[str]
    session_api_key: str | None = field(default=None, repr=False)
    """Only from a warm sandbox: the key its agent-server booted with before any conversation."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per step of the sandbox's own (openhands_sandbox.timings), in the order they ran."""


class ControlPlaneClient:
    def __init__(
        self,
        api_url: str,
        token: str,
        redactor: Redactor,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._token = token
        self._redactor = redactor
        self._attempts = attempts
        self._backoff_seconds = backoff_seconds
        self._sleep = sleep

    def fetch_context(self) -> Any:
        return self._call("GET", "/v1/context", None, self._attempts)

    def send_phase(self, phase: Phase) -> None:
        self._send_event({"type": "phase", "phase": phase.value})

    def send_heartbeat(self) -> None:
        # One attempt: the next heartbeat is the retry.
        self._send_event({"type": "heartbeat"}, attempts=1)

    def send_ready(self, report: ReadyReport) -> None:
        self._send_event(
            {
                "type": "ready",
                "agent_server_url": report.agent_server_url,
                "agent_conversation_id": report.agent_conversation_id,
                "workspace_dir": report.workspace_dir,
                "commit": report.commit,
                "microagents": report.microagents,
                **({"session_api_key": report.session_api_key} if report.session_api_key else {}),
                **({"timings": report.timings} if report.timings else {}),
            }
        )

    def send_failed(self, failure: SandboxFailure) -> None:
        event = {
            "type": "failed",
            "error_code": failure.code.value,
            "message": failure.message,
            "details": failure.details,
        }
        self._send_event(self._redactor.redact_value(event))

    # --- the channel to a running conversation: one attempt each, the callers retry --------

    def post_agent_events(self, events: list[dict[str, Any]]) -> None:
        """``POST /v1/agent-events``: agent-server events, oldest first (idempotent on ``id``)."""
        self._call("POST", "/v1/agent-events", {"events": events}, 1)

    def post_agent_conversation(self, info: dict[str, Any]) -> None:
        """``POST /v1/agent-conversation``: the agent's execution status (and conversation info)."""
        self._call("POST", "/v1/agent-conversation", info, 1)

    def fetch_inbox(self, wait_seconds: float) -> list[dict[str, Any]]:
        """``GET /v1/inbox?wait=N``: messages and confirmations not yet acknowledged, oldest first."""
        answer = self._call(
            "GET", f"/v1/inbox?wait={int(wait_seconds)}", None, 1, timeout=wait_seconds + REQUEST_TIMEOUT_SECONDS
        )
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise ControlPlaneUnavailable("GET /v1/inbox answered without an item list")
        return items

    def ack_inbox_item(self, item_id: str) -> None:
        """``POST /v1/inbox/{item_id}/ack`` (idempotent)."""
        self._call("POST", f"/v1/inbox/{urllib.parse.quote(item_id, safe='')}/ack", {}, 1)

    def post_workspace(self, report: dict[str, Any]) -> None:
        """``POST /v1/workspace``: what the agent changed (docs/sandbox-protocol.md)."""
        self._call("POST", "/v1/workspace", report, 1)

    def _send_event(self, event: dict[str, Any], *, attempts: int | None = None) -> None:
        self._call("POST", "/v1/events", event, attempts or self._attempts)

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        attempts: int,
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> Any:
        last_problem = "no attempt made"
        for attempt in range(1, attempts + 1):
            try:
                return self._request_once(method, path, body, timeout)
            except _RetryableProblem as problem:
                last_problem = str(problem)
                log.warning(
                    "control plane call failed",
                    extra=fields(method=method, path=path, attempt=attempt, problem=last_problem),
                )
            if attempt < attempts:
                self._sleep(self._backoff_seconds * 2 ** (attempt - 1))
        raise ControlPlaneUnavailable(f"{method} {path} failed: {last_problem}")

    def _request_once(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = http_request(
            self._api_url + path,
            body=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if data is not None else {}),
            },
        )
        try:
            with open_http(request, timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise _problem_for_status(error.code, method, path, _msg_id_of(error)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
            raise _RetryableProblem(f"cannot reach the callback API: {error}") from None
        try:
            return json.loads(payload) if payload else None
        except json.JSONDecodeError:
            raise ControlPlaneUnavailable(f"{method} {path} answered with non-JSON") from None


class _RetryableProblem(Exception):
    pass


def _msg_id_of(error: urllib.error.HTTPError) -> str | None:
    """``msg_id`` of an error body ``{"status": "error", "message", "msg_id"}``, if there is one."""
    try:
        body = json.loads(error.read(64 * 1024) or b"null")
    except (OSError, ValueError):
        return None
    msg_id = body.get("msg_id") if isinstance(body, dict) else None
    return msg_id if isinstance(msg_id, str) else None


def _problem_for_status(status: int, method: str, path: str, msg_id: str | None = None) -> Exception:
    if status in REJECTING_STATUSES:
        return ControlPlaneRejected(status)
    if status in RETRYABLE_STATUSES:
        return _RetryableProblem(f"HTTP {status}")
    return ControlPlaneRefused(status, f"{method} {path} answered HTTP {status} {msg_id or ''}".rstrip(), msg_id)
