"""The webhook relay: the agent-server's events and status, forwarded to the control plane.

The agent-server posts its events to webhooks (``WebhookSpec``): batches to
``{base_url}/events/{conversation hex}`` and conversation info to ``{base_url}/conversations``.
Its ``base_url`` is this relay, a small HTTP server on 127.0.0.1 inside the bootstrap, started
before the agent-server so its URL is part of the agent-server's configuration at boot. The
agent-server never holds the sandbox token: the relay adds it.

What the relay receives goes into one queue, in arrival order, and is answered at once. One
thread forwards the queue to the sandbox API, one post at a time, events oldest first (a status
goes after the events queued before it is posted): a post that fails is retried (backoff
doubling up to ``MAX_BACKOFF_SECONDS``) until it succeeds, so events are never reordered and
nothing is dropped because the control plane had a bad moment.
Only a final refusal (a payload the service will never take: 400, 413...) drops that post, with
a log line; ``SANDBOX$EVENT_LIMIT_REACHED`` (the transcript is full) stops sending events, statuses
and workspace reports go on; 401/409 (the conversation is over) end the forwarding.

The agent-server posts conversation info only when a conversation starts, pauses or is deleted;
the execution status otherwise changes through ``ConversationStateUpdateEvent`` events. The relay
follows those, and after the event that changed it sends ``POST /v1/agent-conversation``, so
``agent_status`` moves in event order. Before a status saying the agent stopped working
(``finished``, ``idle``, ``waiting_for_confirmation``...) is sent, ``before_stopped_status``
runs (the workspace report), so a client that sees the status finds the workspace current; it is
skipped when a later status is already queued (the agent is already working again).

The relay serves one conversation, named before the agent-server creates it
(``serve_conversation``): posts about any other, and every post before one is named, are answered
and dropped. A pool sandbox's agent-server runs a warm-up conversation while it waits for an
assignment (warm.py); none of its events or statuses may reach the conversation it is then given.

The bootstrap starts receiving when the agent-server boots and forwarding once `ready` is
sent: the first events (the system prompt, the first message, the initial status and its workspace
report) would otherwise go to the control plane while it handles the start, and RUNNING would
wait on them. They follow `ready` at once, in order.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from openhands_sandbox.control_plane import (
    ControlPlaneClient,
    ControlPlaneRefused,
    ControlPlaneRejected,
    ControlPlaneUnavailable,
)
from openhands_sandbox.logs import fields

log = logging.getLogger(__name__)

SESSION_KEY_HEADER = "X-Session-API-Key"
MAX_REQUEST_BYTES = 32 * 1024 * 1024
MAX_EVENTS_PER_POST = 50
MAX_POST_BYTES = 1024 * 1024
"""Well under API Gateway's and Lambda's payload limits; a bigger single event goes alone."""
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
WEBHOOK_BUFFER_EVENTS = 25
WEBHOOK_FLUSH_SECONDS = 0.1
"""How long the agent-server holds an event before posting it: the latency it adds."""
FORWARDED_INFO_FIELDS = ("id", "execution_status", "title", "created_at", "updated_at")
"""What of the agent-server's conversation info goes to the control plane: not its settings, stats or
secret registry (the LLM key may be in them)."""
EVENT_LIMIT_REACHED = "SANDBOX$EVENT_LIMIT_REACHED"
"""The conversation's transcript is full: no later event can be stored (docs/sandbox-protocol.md)."""
STOPPED_WORKING = frozenset({"finished", "idle", "waiting_for_confirmation", "paused", "error", "stuck"})
"""Execution statuses in which the agent does nothing until someone acts."""


@dataclass(frozen=True, eq=False)
class _Outgoing:
    kind: str
    """``events`` or ``conversation``."""
    payload: Any
    size: int


def execution_status_of(event: dict[str, Any]) -> str | None:
    """The execution status an agent-server event sets, if it sets one."""
    if event.get("kind") != "ConversationStateUpdateEvent":
        return None
    key, value = event.get("key"), event.get("value")
    if key == "execution_status" and isinstance(value, str):
        return value
    if key == "full_state" and isinstance(value, dict) and isinstance(value.get("execution_status"), str):
        return str(value["execution_status"])
    return None


class _RelayHandler(BaseHTTPRequestHandler):
    server: _RelayServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        relay = self.server.relay
        if not hmac.compare_digest(self.headers.get(SESSION_KEY_HEADER, ""), relay.session_api_key):
            self._answer(401)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            self._answer(413)
            return
        try:
            body = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._answer(400)
            return
        path = self.path.rstrip("/")
        if path.startswith("/events/") and isinstance(body, list):
            if relay.serves(path.removeprefix("/events/")):
                relay.accept_events([event for event in body if isinstance(event, dict)])
        elif path == "/conversations" and isinstance(body, dict):
            if relay.serves(body.get("id")):
                relay.accept_conversation_info(body)
        else:
            self._answer(404)
            return
        self._answer(200)  # a post about another conversation too: the agent-server need not retry it

    def _answer(self, status: int) -> None:
        payload = b'{"status": "ok"}' if status == 200 else b'{"status": "error"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _RelayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, relay: EventRelay) -> None:
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.relay = relay


class EventRelay:
    """The relay's HTTP server and its forwarding thread (see the module's docstring)."""

    def __init__(
        self,
        client: ControlPlaneClient,
        session_api_key: str,
        *,
        before_stopped_status: Callable[[str], None] | None = None,
        on_rejected: Callable[[], None] | None = None,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.client = client
        self.session_api_key = session_api_key
        self.before_stopped_status = before_stopped_status
        self.on_rejected = on_rejected
        self._queue: deque[_Outgoing] = deque()
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self._sleep = sleep or self._abandon.wait
        self._status: str | None = None
        self._conversation: uuid.UUID | None = None
        self.ignored_posts = 0
        self._started = False
        self._forwarding = False
        self._transcript_full = False
        self.forwarded_events = 0
        self.dropped_posts = 0
        self._server = _RelayServer(self)
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="relay-http", daemon=True
        )
        self._forwarder = threading.Thread(target=self._forward_until_closed, name="relay-forward", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def execution_status(self) -> str | None:
        with self._changed:
            return self._status

    def webhook_spec(self) -> dict[str, Any]:
        """The agent-server's ``WebhookSpec`` for this relay (its ``webhooks`` config holds it)."""
        return {
            "base_url": self.url,
            "event_buffer_size": WEBHOOK_BUFFER_EVENTS,
            "flush_delay": WEBHOOK_FLUSH_SECONDS,
            "num_retries": 10,
            "retry_delay": 1,
            "max_batch_bytes": MAX_POST_BYTES,
        }

    def start(self) -> None:
        self.start_receiving()
        self.start_forwarding()

    def serve_conversation(self, agent_conversation_id: str) -> None:
        """From now on, take the posts about this conversation of the agent-server (its UUID)."""
        self._conversation = uuid.UUID(agent_conversation_id)

    def serves(self, conversation_id: Any) -> bool:
        """Whether a post about ``conversation_id`` (a UUID, hex or not) is this relay's to forward."""
        try:
            served = self._conversation is not None and uuid.UUID(str(conversation_id)) == self._conversation
        except ValueError:
            served = False
        if not served:
            with self._changed:
                self.ignored_posts += 1
        return served

    def start_receiving(self) -> None:
        """Listen: what the agent-server posts is answered and queued (forwarded once forwarding starts)."""
        if self._started:
            return
        self._started = True
        self._server_thread.start()
        log.info("event relay listening", extra=fields(url=self.url))

    def start_forwarding(self) -> None:
        if not self._forwarding:
            self._forwarding = True
            self._forwarder.start()

    # --- receiving (HTTP threads) -------------------------------------------------------------

    def accept_events(self, events: list[dict[str, Any]]) -> None:
        """Queue a batch; after each event that changes the execution status, queue the status."""
        with self._changed:
            pending: list[dict[str, Any]] = []
            for event in events:
                pending.append(event)
                status = execution_status_of(event)
                if status is not None and status != self._status:
                    self._status = status
                    self._append("events", pending)
                    pending = []
                    self._append("conversation", {"execution_status": status, "event_id": event.get("id")})
            if pending:
                self._append("events", pending)

    def accept_conversation_info(self, info: dict[str, Any]) -> None:
        """The agent-server's own conversation info; its status never overrides a newer one from events."""
        info = {name: info[name] for name in FORWARDED_INFO_FIELDS if name in info}
        with self._changed:
            if self._status is None and isinstance(info.get("execution_status"), str):
                self._status = str(info["execution_status"])
            if self._status is not None and info.get("execution_status") != "deleting":
                info = {**info, "execution_status": self._status}
            self._append("conversation", info)

    def _append(self, kind: str, payload: Any) -> None:
        if kind == "events" and (not payload or self._transcript_full):
            return
        self._queue.append(_Outgoing(kind, payload, len(json.dumps(payload, default=str))))
        self._changed.notify_all()

    # --- forwarding (one thread) --------------------------------------------------------------

    def _forward_until_closed(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            batch = self._next_post()
            if batch is None:
                return
            try:
                self._post(batch)
            except ControlPlaneRejected as rejected:
                log.warning("the control plane rejected the relay", extra=fields(status=rejected.status))
                self._drop_everything()
                if self.on_rejected is not None:
                    self.on_rejected()
                return
            except ControlPlaneRefused as refused:
                if refused.msg_id == EVENT_LIMIT_REACHED:
                    log.error("the conversation's transcript is full: later events are not sent")
                    self._transcript_full = True
                    self._drop_events()
                    continue
                if batch[0].kind == "events" and sum(len(item.payload) for item in batch) > 1:
                    self._split_head(batch)  # one event at a time finds the one that cannot go
                    continue
                log.error(
                    "the control plane refused a post; dropped",
                    extra=fields(status=refused.status, kind=batch[0].kind, size=batch[0].size),
                )
                self.dropped_posts += 1
            except (ControlPlaneUnavailable, OSError, ValueError) as problem:
                log.warning("relay post failed; retrying", extra=fields(problem=str(problem), backoff=backoff))
                if self._sleep(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = FIRST_BACKOFF_SECONDS
            with self._changed:
                for item in batch:
                    self._queue.remove(item)
                self._changed.notify_all()

    def _next_post(self) -> list[_Outgoing] | None:
        """What to post next: the queued events first (merged, oldest first, up to the limits), then
        the oldest status. Events never pass each other; a status may be posted after events that
        came later (it lags by one post), which keeps the agent's events from waiting behind the
        status posts of the same webhook batch."""
        with self._changed:
            while not self._queue:
                if self._closing.is_set() or self._abandon.is_set():
                    return None
                self._changed.wait(0.5)
            if self._abandon.is_set():
                return None
            batch: list[_Outgoing] = []
            count = size = 0
            for item in self._queue:
                if item.kind != "events":
                    continue
                if batch and (count + len(item.payload) > MAX_EVENTS_PER_POST or size + item.size > MAX_POST_BYTES):
                    break
                batch.append(item)
                count += len(item.payload)
                size += item.size
            return batch or [self._queue[0]]

    def _post(self, batch: list[_Outgoing]) -> None:
        head = batch[0]
        if head.kind == "conversation":
            status = head.payload.get("execution_status")
            if status in STOPPED_WORKING and self.before_stopped_status is not None and not self._superseded(status):
                self.before_stopped_status(str(status))
            self.client.post_agent_conversation(head.payload)
            return
        events = [event for item in batch for event in item.payload]
        self.client.post_agent_events(events)
        self.forwarded_events += len(events)

    def _superseded(self, status: Any) -> bool:
        """True if a later status is already queued (e.g. the `idle` an agent-server reports just
        before `running` on a new message): no workspace report for a state already left."""
        with self._changed:
            return any(
                item.kind == "conversation" and item.payload.get("execution_status") != status
                for item in list(self._queue)[1:]
            )

    def _split_head(self, batch: list[_Outgoing]) -> None:
        """Put the batch's events back at the front of the queue, one post each."""
        with self._changed:
            for item in batch:
                self._queue.remove(item)
            singles = [
                _Outgoing("events", [event], len(json.dumps(event, default=str)))
                for item in batch
                for event in item.payload
            ]
            self._queue.extendleft(reversed(singles))

    def _drop_events(self) -> None:
        with self._changed:
            for item in [item for item in self._queue if item.kind == "events"]:
                self._queue.remove(item)
            self._changed.notify_all()

    def _drop_everything(self) -> None:
        with self._changed:
            self._queue.clear()
            self._changed.notify_all()

    # --- ending -------------------------------------------------------------------------------

    def pending(self) -> int:
        with self._changed:
            return len(self._queue)

    def wait_until_forwarded(self, timeout: float) -> bool:
        """Wait until everything received so far is forwarded (or ``timeout``); True if it was."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._forwarder.is_alive():
                    return False
                self._changed.wait(min(remaining, 0.5))
        return True

    def close(self, drain_seconds: float) -> None:
        """Stop listening, forward what is queued for up to ``drain_seconds``, then give up the rest."""
        if not self._started:
            self._server.server_close()
            return
        self.start_forwarding()  # what was received goes out, if the control plane still takes it
        self._server.shutdown()
        self._server.server_close()
        self._closing.set()
        with self._changed:
            self._changed.notify_all()
        if not self.wait_until_forwarded(drain_seconds):
            left = self.pending()
            if left:
                log.warning("relay closed with posts not forwarded", extra=fields(pending=left))
        self._abandon.set()
        with self._changed:
            self._changed.notify_all()
        if self._forwarder.is_alive():
            self._forwarder.join(timeout=drain_seconds + 20)
