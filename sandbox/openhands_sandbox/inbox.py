"""The inbox poller: messages and confirmations for the running agent, pulled from the control plane.

The sandbox only calls out: it long-polls ``GET /v1/inbox?wait=20`` and gets the items not yet
acknowledged, oldest first. Each item is handed to the agent-server (a message:
``POST /api/conversations/{id}/events`` with ``run: true``; a confirmation:
``POST .../events/respond_to_confirmation``), then acknowledged (``POST /v1/inbox/{id}/ack``).

Exactly once, while the sandbox lives (docs/sandbox-protocol.md):

- an item is acknowledged only after the agent-server took it, so a failed poll, a failed hand-over
  or a sandbox that dies before the ack loses nothing: the item comes back on the next poll;
- the ids of the items handed over are kept (``delivered``), so an item that comes back because
  its ack failed is acknowledged again, never handed over twice;
- a hand-over whose answer was lost (timeout, connection reset) is settled against the
  agent-server's own record: a message was taken if the agent-server now has one more user
  message than before and the newest holds its text; a confirmation was taken if the agent is no
  longer waiting for one. Items are handed over one at a time, so the count is exact.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openhands_sandbox.control_plane import (
    ControlPlaneClient,
    ControlPlaneRejected,
    ControlPlaneUnavailable,
)
from openhands_sandbox.http_client import http_request, open_http
from openhands_sandbox.logs import fields

log = logging.getLogger(__name__)

POLL_WAIT_SECONDS = 20
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
AGENT_SERVER_TIMEOUT_SECONDS = 30.0
SESSION_KEY_HEADER = "X-Session-API-Key"
WAITING_FOR_CONFIRMATION = "waiting_for_confirmation"


class AgentServerError(Exception):
    """The agent-server did not take an item, or its answer was lost (``ambiguous``)."""

    def __init__(self, message: str, *, ambiguous: bool) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


@dataclass(frozen=True)
class AgentConversation:
    """One conversation on the local agent-server, as the bootstrap sees it."""

    base_url: str
    conversation_id: str
    session_api_key: str = field(repr=False)

    def send_message(self, text: str, image_urls: list[str]) -> None:
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if image_urls:
            content.append({"type": "image", "image_urls": image_urls})
        self._call("POST", "/events", {"role": "user", "content": content, "run": True})

    def respond_to_confirmation(self, accept: bool, reason: str | None) -> None:
        body: dict[str, Any] = {"accept": accept}
        if reason:
            body["reason"] = reason
        self._call("POST", "/events/respond_to_confirmation", body)

    def user_message_count(self) -> int:
        """How many user messages the agent-server holds."""
        return int(self._call("GET", "/events/count?kind=MessageEvent&source=user", None))

    def newest_user_message(self) -> str | None:
        """The text of the newest user message the agent-server holds."""
        page = self._call("GET", "/events/search?kind=MessageEvent&source=user&sort_order=TIMESTAMP_DESC&limit=1", None)
        newest = (page or {}).get("items") or []
        if not newest:
            return None
        parts = (newest[0].get("llm_message") or {}).get("content") or []
        return "".join(str(part.get("text", "")) for part in parts if part.get("type") == "text")

    def execution_status(self) -> str | None:
        info = self._call("GET", "", None)
        status = info.get("execution_status") if isinstance(info, dict) else None
        return str(status) if status else None

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        url = f"{self.base_url}/api/conversations/{urllib.parse.quote(self.conversation_id, safe='')}{path}"
        request = http_request(
            url,
            method=method,
            body=None if body is None else json.dumps(body).encode(),
            headers={SESSION_KEY_HEADER: self.session_api_key, "Content-Type": "application/json"},
        )
        try:
            with open_http(request, AGENT_SERVER_TIMEOUT_SECONDS) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            # The agent-server answered: it did not take the item (a 5xx may have half done it).
            raise AgentServerError(
                f"{method} {path or '/'} answered HTTP {error.code}", ambiguous=error.code >= 500
            ) from None
        except (urllib.error.URLError, OSError) as error:
            refused = isinstance(getattr(error, "reason", error), ConnectionRefusedError)
            raise AgentServerError(f"{method} {path or '/'} failed: {error}", ambiguous=not refused) from None
        return json.loads(payload) if payload else None


class InboxPoller:
    """The polling thread (see the module's docstring)."""

    def __init__(
        self,
        client: ControlPlaneClient,
        agent: AgentConversation,
        *,
        on_rejected: Callable[[], None],
        wait_seconds: float = POLL_WAIT_SECONDS,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self.client = client
        self.max_backoff_seconds = max_backoff_seconds
        self.agent = agent
        self.on_rejected = on_rejected
        self.wait_seconds = wait_seconds
        self.delivered: set[str] = set()
        self.handed_over: list[str] = []
        """Item ids in the order they reached the agent-server."""
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._poll_until_stopped, name="inbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end; a poll in flight is abandoned (nothing of it was handed over)."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)

    def _poll_until_stopped(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while not self._stopped.is_set():
            try:
                items = self.client.fetch_inbox(self.wait_seconds)
                backoff = FIRST_BACKOFF_SECONDS
                for item in items:
                    if self._stopped.is_set():
                        return
                    self.handle(item)
            except ControlPlaneRejected as rejected:
                log.warning("inbox rejected: the conversation is over", extra=fields(status=rejected.status))
                self.on_rejected()
                return
            except (ControlPlaneUnavailable, AgentServerError, OSError, ValueError) as problem:
                log.warning("inbox round failed; retrying", extra=fields(problem=str(problem), backoff=backoff))
                if self._stopped.wait(min(backoff, self.max_backoff_seconds)):
                    return
                backoff = min(backoff * 2, self.max_backoff_seconds)

    def handle(self, item: dict[str, Any]) -> None:
        """Hand ``item`` over unless it already was, then acknowledge it."""
        item_id = item.get("item_id")
        if not isinstance(item_id, str) or not item_id:
            log.error("inbox item without an id; ignored", extra=fields(kind=item.get("kind")))
            return
        if item_id not in self.delivered:
            kind = item.get("kind")
            if kind == "message":
                self._deliver_message(item_id, str(item.get("text") or ""), list(item.get("image_urls") or []))
            elif kind == "confirmation":
                self._deliver_confirmation(item_id, bool(item.get("accept")), item.get("reason"))
            else:
                log.error(
                    "inbox item of an unknown kind; left unacknowledged", extra=fields(item_id=item_id, kind=kind)
                )
                return
            self.delivered.add(item_id)
            self.handed_over.append(item_id)
        self.client.ack_inbox_item(item_id)
        log.info("inbox item acknowledged", extra=fields(item_id=item_id, kind=item.get("kind")))

    def _deliver_message(self, item_id: str, text: str, image_urls: list[str]) -> None:
        count_before = self.agent.user_message_count()
        try:
            self.agent.send_message(text, image_urls)
        except AgentServerError as error:
            if not error.ambiguous:
                raise
            taken = self.agent.user_message_count() == count_before + 1 and self.agent.newest_user_message() == text
            if not taken:
                raise
            log.info("message was taken although its answer was lost", extra=fields(item_id=item_id))
        log.info("message handed to the agent", extra=fields(item_id=item_id))

    def _deliver_confirmation(self, item_id: str, accept: bool, reason: Any) -> None:
        if self.agent.execution_status() != WAITING_FOR_CONFIRMATION:
            # Nothing is pending (answered already, or the agent moved on): nothing to hand over.
            log.warning("confirmation with nothing pending; acknowledged", extra=fields(item_id=item_id))
            return
        try:
            self.agent.respond_to_confirmation(accept, str(reason) if reason else None)
        except AgentServerError as error:
            if not error.ambiguous or self.agent.execution_status() == WAITING_FOR_CONFIRMATION:
                raise
        log.info("confirmation handed to the agent", extra=fields(item_id=item_id, accept=accept))
