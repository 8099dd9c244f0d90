"""A real HTTP server on 127.0.0.1 that answers like the conversations API, for the client's tests.

Bodies are checked and built with the service's own pydantic models (`CreateConversationRequest`,
`SettingsUpdate`, `ConversationView`, `SettingsView`), so a field the client sends or reads that
the service does not have fails here. The lifecycle answers (list items, stop/start, `true` for
rename and delete, the quota) mirror `conversation_service.models.lifecycle`; test_package.py
checks the client's models against docs/openapi.json. Each new conversation follows a script of
phases: the next step is applied on each GET (`advance_on_get`) or when the test calls `advance`.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from conversation_service.models.api import (
    ConversationView,
    CreateConversationRequest,
    SettingsUpdate,
    SettingsView,
)
from pydantic import ValidationError

HAPPY_PHASES = (
    "STATUS$INITIALIZING_CONTEXT",
    "STATUS$STARTING_RUNTIME",
    "STATUS$RUNTIME_STARTED",
    "STATUS$SETTING_UP_WORKSPACE",
    "STATUS$RUNNING_SETUP_SCRIPT",
    "STATUS$SETTING_UP_GIT_HOOKS",
    "STATUS$STARTING_AGENT_SERVER",
)
SETUP_FAILURE_MESSAGE = (
    ".openhands/setup.sh exited with status 3; see the end of its output in the details and fix the script."
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Step:
    """One change of a conversation: a new phase (a timeline entry), and the status and fields it brings."""

    phase: str
    status: str = "STARTING"
    fields: dict[str, Any] = field(default_factory=dict)


def happy_script() -> list[Step]:
    steps = [Step(phase) for phase in HAPPY_PHASES]
    ready = {"agent_server_url": "http://127.0.0.1:9/agent", "agent_conversation_id": "a" * 32}
    return [*steps, Step("STATUS$READY", "RUNNING", ready)]


def setup_failure_script() -> list[Step]:
    details = {"exit_code": 3, "timed_out": False, "output_tail": "installing deps\nnpm ERR! missing script: build"}
    failure = {"error_code": "SETUP_SCRIPT_FAILED", "error_message": SETUP_FAILURE_MESSAGE, "error_details": details}
    return [Step(phase) for phase in HAPPY_PHASES[:5]] + [Step("STATUS$ERROR", "ERROR", failure)]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class ForcedAnswer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class FakeConversationsApi:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.lock = threading.RLock()
        self.conversations: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # creation order; the list answers newest first
        self.scripts: dict[str, deque[Step]] = {}
        self.scripts_by_repository: dict[str, list[Step]] = {"user/broken-setup": setup_failure_script()}
        self.advance_on_get = True
        self.requests: list[RecordedRequest] = []
        self.forced: deque[ForcedAnswer] = deque()
        self.settings: dict[str, Any] = {
            "agent": "CodeActAgent",
            "max_iterations": 100,
            "confirmation_mode": False,
            "security_analyzer": None,
            "llm_model": "anthropic/claude-sonnet-4",
            "llm_base_url": None,
            "sandbox_base_container_image": "ghcr.io/openhands/agent-server:latest",
            "authorized_event_sources": [],
            "updated_at": None,
        }
        self.secrets: dict[str, Any] = {"llm_api_key": "sk-initial", "provider_tokens": {}}
        self.quota_limit = 3
        self.changed = threading.Condition(self.lock)
        self.agent_events: dict[str, list[dict[str, Any]]] = {}  # per conversation, oldest first
        self.messages: dict[str, list[dict[str, Any]]] = {}  # what POST .../messages and .../confirm took
        self.workspaces: dict[str, dict[str, Any]] = {}
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # -- control from the test ------------------------------------------------------------
    def force(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        """The next request gets this answer (bytes are sent as they are, anything else as JSON)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        content_type = "application/json" if not isinstance(body, bytes) else "text/html"
        self.forced.append(ForcedAnswer(status, raw, headers or {}, content_type))

    def add_conversation(self, repository: str = "user/repo", status: str = "STOPPED", title: str = "") -> str:
        """A conversation that exists already (for list paging and lifecycle tests)."""
        conversation_id = self._new_conversation(CreateConversationRequest(repository=repository), script=[])
        with self.lock:
            view = self.conversations[conversation_id]
            view["conversation_status"] = status
            if title:
                view["title"] = title
        return conversation_id

    def advance(self, conversation_id: str) -> bool:
        """Apply the next scripted step; False when the script is done."""
        with self.lock:
            script = self.scripts[conversation_id]
            if not script:
                return False
            step = script.popleft()
            view = self.conversations[conversation_id]
            at = now_iso()
            view["timeline"].append({"phase": step.phase, "at": at})
            view["runtime_status"] = step.phase
            view["conversation_status"] = step.status
            view["updated_at"] = at
            view.update(step.fields)
            ConversationView.model_validate(view)
            return True

    def add_agent_event(self, conversation_id: str, kind: str, source: str, **event: Any) -> dict[str, Any]:
        """An event of the agent's transcript, in the service's envelope around the agent-server's JSON."""
        with self.changed:
            events = self.agent_events.setdefault(conversation_id, [])
            timestamp = now_iso()
            body = {"id": uuid.uuid4().hex, "timestamp": timestamp, "source": source, "kind": kind, **event}
            envelope = {"id": body["id"], "timestamp": timestamp, "source": source, "kind": kind, "event": body}
            events.append(envelope)
            self.changed.notify_all()
            return envelope

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.method == method and request.path == path]

    # -- server ---------------------------------------------------------------------------
    @contextmanager
    def running(self) -> Iterator[FakeConversationsApi]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-conversations-api", daemon=True
        )
        thread.start()
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}/api"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    # -- the API --------------------------------------------------------------------------
    def _new_conversation(self, request: CreateConversationRequest, script: list[Step] | None = None) -> str:
        conversation_id = uuid.uuid4().hex
        at = now_iso()
        view = ConversationView(
            conversation_id=conversation_id,
            title=f"Conversation {conversation_id[:5]}",
            conversation_status="STARTING",
            runtime_status="STATUS$QUEUED",
            repository=request.repository,
            git_provider=(request.git_provider or "github") if request.repository else None,
            selected_branch=request.selected_branch or ("main" if request.repository else None),
            commit="0123456789abcdef0123456789abcdef01234567" if request.repository else None,
            trigger="api",
            agent=self.settings["agent"],
            max_iterations=self.settings["max_iterations"],
            confirmation_mode=self.settings["confirmation_mode"],
            llm_model=self.settings["llm_model"],
            runtime="fargate",
            sandbox_image=self.settings["sandbox_base_container_image"],
            created_at=at,
            updated_at=at,
            timeline=[{"phase": "STATUS$QUEUED", "at": at}],
        ).model_dump(mode="json")
        if script is None:
            script = self.scripts_by_repository.get(request.repository or "", happy_script())
        with self.lock:
            self.conversations[conversation_id] = view
            self.order.append(conversation_id)
            self.scripts[conversation_id] = deque(script)
        return conversation_id

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        segments = [unquote(part) for part in path.split("/") if part]
        if segments[:1] != ["api"]:
            return _error(404, "Not found", "ERROR$NOT_FOUND")
        route = segments[1:]
        if route == ["conversations"] and method == "POST":
            return self._create(body)
        if route == ["conversations"] and method == "GET":
            return self._list(query)
        if route == ["settings"]:
            return self._settings(method, body)
        if route == ["quota"] and method == "GET":
            with self.lock:
                active = sum(
                    view["conversation_status"] in ("STARTING", "RUNNING") for view in self.conversations.values()
                )
            available = max(0, self.quota_limit - active)
            return 200, {"limit": self.quota_limit, "active": active, "available": available, "policy": "close_oldest"}
        if len(route) in (2, 3) and route[0] == "conversations":
            return self._conversation(method, route[1], route[2] if len(route) == 3 else None, body, query)
        return _error(404, "Not found", "ERROR$NOT_FOUND")

    def _create(self, body: Any) -> tuple[int, Any]:
        try:
            request = CreateConversationRequest.model_validate(body)
        except ValidationError as error:
            return _validation_error(error)
        if request.selected_branch == "no-such-branch":
            return _error(400, f"Branch {request.selected_branch} not found", "STATUS$GIT_BRANCH_NOT_FOUND")
        conversation_id = self._new_conversation(request)
        return 200, {"status": "ok", "conversation_id": conversation_id, "conversation_status": "STARTING"}

    def _list(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        repository = query.get("selected_repository", [None])[0]
        trigger = query.get("conversation_trigger", [None])[0]
        filters = f"{repository}|{trigger}"
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            return _error(422, "Invalid request: limit: not an integer", "ERROR$VALIDATION")
        if not 1 <= limit <= 100:
            return _error(422, "Invalid request: limit: must be 1..100", "ERROR$VALIDATION")
        start = 0
        if "page_id" in query:
            # Opaque to clients, and only valid with the filters it was made for (as the service's).
            try:
                made_for, offset = base64.urlsafe_b64decode(query["page_id"][0]).decode().rsplit("#", 1)
                start = int(offset)
            except ValueError:
                made_for = ""
            if made_for != filters:
                return _error(400, "Invalid page_id", "ERROR$INVALID_PAGE_ID")
        with self.lock:
            newest_first = [
                self.conversations[key]
                for key in reversed(self.order)
                if repository in (None, self.conversations[key]["repository"])
                and trigger in (None, self.conversations[key]["trigger"])
            ]
        page = [summary(view) for view in newest_first[start : start + limit]]
        more = start + limit < len(newest_first)
        next_page_id = base64.urlsafe_b64encode(f"{filters}#{start + limit}".encode()).decode() if more else None
        return 200, {"results": page, "next_page_id": next_page_id}

    def _channel(
        self, method: str, conversation_id: str, action: str, body: Any, query: dict[str, list[str]]
    ) -> tuple[int, Any]:
        """The owner's side of the channel (docs/api): events, messages, confirm, workspace."""
        view = self.conversations[conversation_id]
        if action == "events" and method == "GET":
            start = int(query.get("page_id", ["0"])[0])
            limit = int(query.get("limit", ["50"])[0])
            wait = min(int(query.get("wait", ["0"])[0]), 20)
            events = self.agent_events.setdefault(conversation_id, [])
            self.changed.wait_for(lambda: len(events) > start, timeout=wait)
            page = events[start : start + limit]
            return 200, {"results": page, "next_page_id": str(start + len(page))}
        if action in ("messages", "confirm") and method == "POST":
            if view["conversation_status"] not in ("STARTING", "RUNNING"):
                return _error(409, "The conversation is not running", "CONVERSATION$NOT_RUNNING")
            valid = (
                isinstance(body, dict) and isinstance(body.get("text"), str) and body["text"]
                if action == "messages"
                else isinstance(body, dict) and isinstance(body.get("accept"), bool)
            )
            if not valid:
                return _error(422, "Invalid request", "ERROR$VALIDATION")
            message_id = uuid.uuid4().hex
            self.messages.setdefault(conversation_id, []).append({"action": action, "message_id": message_id, **body})
            self.changed.notify_all()
            return 202, {"status": "ok", "message_id": message_id}
        if action == "workspace" and method == "GET":
            found = self.workspaces.get(conversation_id)
            if found is None:
                return _error(404, "No workspace published yet", "WORKSPACE$NOT_PUBLISHED")
            return 200, found
        return _error(404, "Not found", "ERROR$NOT_FOUND")

    def _conversation(
        self,
        method: str,
        conversation_id: str,
        action: str | None,
        body: Any,
        query: dict[str, list[str]] | None = None,
    ) -> tuple[int, Any]:
        with self.lock:
            view = self.conversations.get(conversation_id)
            if view is None:
                return _error(404, f"Conversation {conversation_id} not found", "CONVERSATION$NOT_FOUND")
            if method == "GET" and action is None:
                if self.advance_on_get:
                    self.advance(conversation_id)
                return 200, view
            if method == "DELETE" and action is None:
                del self.conversations[conversation_id]
                self.order.remove(conversation_id)
                return 200, True
            if method == "PATCH" and action is None:
                title = body.get("title") if isinstance(body, dict) else None
                if not isinstance(title, str) or not title.strip() or set(body) != {"title"}:
                    return _error(422, "Invalid request: title: required", "ERROR$VALIDATION")
                view["title"] = title.strip()
                return 200, True
            if action in ("events", "messages", "confirm", "workspace"):
                return self._channel(method, conversation_id, action, body, query or {})
            if method == "POST" and action == "stop":
                if view["conversation_status"] not in ("STARTING", "RUNNING"):
                    return 200, _action(conversation_id, view["conversation_status"], "Conversation was not running")
                self._move(view, "STOPPED", "STATUS$STOPPED")
                return 200, _action(conversation_id, "STOPPED", "Conversation stopped")
            if method == "POST" and action == "start":
                if view["conversation_status"] in ("STARTING", "RUNNING"):
                    return 200, _action(conversation_id, view["conversation_status"], "Conversation is already active")
                if view["conversation_status"] not in ("STOPPED", "ERROR"):
                    return _error(
                        409, "Only a STOPPED or ERROR conversation can be started", "CONVERSATION$NOT_STARTABLE"
                    )
                self._move(view, "STARTING", "STATUS$QUEUED")
                self.scripts[conversation_id] = deque(happy_script())
                return 200, _action(conversation_id, "STARTING", "Conversation starting")
            return _error(404, "Not found", "ERROR$NOT_FOUND")

    @staticmethod
    def _move(view: dict[str, Any], status: str, phase: str) -> None:
        at = now_iso()
        view.update(conversation_status=status, runtime_status=phase, updated_at=at)
        view["timeline"].append({"phase": phase, "at": at})

    def _settings(self, method: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            if method == "POST":
                try:
                    update = SettingsUpdate.model_validate(body)
                except ValidationError as error:
                    return _validation_error(error)
                for name, value in update.model_dump(exclude_unset=True).items():
                    if name == "llm_api_key":
                        self.secrets["llm_api_key"] = value or None
                    elif name == "provider_tokens":
                        for provider, token in (value or {}).items():
                            self.secrets["provider_tokens"][str(provider)] = token or None
                    else:
                        self.settings[name] = value
                self.settings["updated_at"] = now_iso()
            elif method != "GET":
                return _error(404, "Not found", "ERROR$NOT_FOUND")
            tokens = {name: token is not None for name, token in self.secrets["provider_tokens"].items()}
            view = SettingsView(
                **self.settings,
                llm_api_key_set=self.secrets["llm_api_key"] is not None,
                provider_tokens_set=tokens,
            )
            return 200, view.model_dump(mode="json")


def summary(view: dict[str, Any]) -> dict[str, Any]:
    """A conversation as the list shows it (the service's `ConversationSummary`)."""
    return {
        "conversation_id": view["conversation_id"],
        "title": view["title"],
        "status": view["conversation_status"],
        "conversation_status": view["conversation_status"],
        "runtime_status": view["runtime_status"],
        "error_code": view["error_code"],
        "selected_repository": view["repository"],
        "selected_branch": view["selected_branch"],
        "git_provider": view["git_provider"],
        "trigger": view["trigger"],
        "created_at": view["created_at"],
        "last_updated_at": view["updated_at"],
        "url": view["agent_server_url"],
    }


def _action(conversation_id: str, status: str, message: str) -> dict[str, Any]:
    return {"status": "ok", "conversation_id": conversation_id, "message": message, "conversation_status": status}


def _error(status: int, message: str, msg_id: str, **extra: Any) -> tuple[int, Any]:
    return status, {"status": "error", "message": message, "msg_id": msg_id, **extra}


def _validation_error(error: ValidationError) -> tuple[int, Any]:
    detail = [
        {"loc": ["body", *error_item["loc"]], "msg": error_item["msg"], "type": error_item["type"]}
        for error_item in error.errors()
    ]
    where = ".".join(str(part) for part in detail[0]["loc"][1:])
    return _error(422, f"Invalid request: {where}: {detail[0]['msg']}", "ERROR$VALIDATION", detail=detail)


def _handler_for(api: FakeConversationsApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: pytest shows failures, not access logs

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = None
            headers = {name.lower(): value for name, value in self.headers.items()}
            query = parse_qs(url.query)
            with api.lock:
                api.requests.append(RecordedRequest(self.command, url.path, query, headers, body))
                forced = api.forced.popleft() if api.forced else None
            if forced is not None:
                self._send(forced.status, forced.body, forced.headers, forced.content_type)
                return
            if api.api_key is not None and headers.get("authorization") != f"Bearer {api.api_key}":
                status, answer = _error(401, "Unauthorized", "ERROR$UNAUTHORIZED")
            else:
                status, answer = api.handle(self.command, url.path, query, body)
            self._send(status, json.dumps(answer).encode(), {}, "application/json")

        def _send(self, status: int, payload: bytes, headers: dict[str, str], content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

    return Handler
