"""Typed results of the API, parsed from its JSON.

Parsing keeps every field the service documents and ignores ones it does not know yet, so a newer
service does not break an older client; `raw` keeps the body exactly as it came (for `--json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from openhands_conversations_client.errors import MalformedResponse

# conversation_status values (docs/architecture.md, "Status model").
STARTING = "STARTING"
RUNNING = "RUNNING"
STOPPED = "STOPPED"
ARCHIVED = "ARCHIVED"
ERROR = "ERROR"
ACTIVE_STATUSES = frozenset({STARTING, RUNNING})


def parse_timestamp(value: str) -> datetime:
    """The service's timestamps: ISO 8601 in UTC, `Z` suffix, e.g. `2025-01-02T03:04:05.678Z`."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _require(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise MalformedResponse(f"expected {kind.__name__} {key!r} in {sorted(data)}")
    return value


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _optional_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_object(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise MalformedResponse(f"expected a JSON object for {what}, got {type(data).__name__}")
    return data


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """A phase (a `runtime_status` id such as `STATUS$RUNNING_SETUP_SCRIPT`) and when it began."""

    phase: str
    at: datetime

    @classmethod
    def from_json(cls, data: object) -> TimelineEntry:
        entry = _as_object(data, "a timeline entry")
        return cls(phase=_require(entry, "phase", str), at=parse_timestamp(_require(entry, "at", str)))


@dataclass(frozen=True, slots=True)
class StartHop:
    """One hop of a start (`start_hops`): `measured_by` "service" (they add up to QUEUED -> READY)
    or "sandbox" (its own steps, within the service's `in_sandbox`)."""

    hop: str
    milliseconds: int
    measured_by: str

    @classmethod
    def from_json(cls, data: object) -> StartHop:
        hop = _as_object(data, "a start hop")
        return cls(
            hop=_require(hop, "hop", str),
            milliseconds=_require(hop, "milliseconds", int),
            measured_by=_require(hop, "measured_by", str),
        )


@dataclass(frozen=True, slots=True)
class Conversation:
    """`GET /api/conversations/{id}` (and each item of the list)."""

    conversation_id: str
    conversation_status: str
    runtime_status: str
    title: str = ""
    status_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_details: dict[str, Any] | None = None
    repository: str | None = None
    git_provider: str | None = None
    selected_branch: str | None = None
    commit: str | None = None
    trigger: str | None = None
    agent: str | None = None
    max_iterations: int | None = None
    confirmation_mode: bool | None = None
    security_analyzer: str | None = None
    llm_model: str | None = None
    runtime: str | None = None
    sandbox_image: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    timeline: tuple[TimelineEntry, ...] = ()
    agent_server_url: str | None = None
    agent_conversation_id: str | None = None
    microagents: tuple[str, ...] = ()
    agent_status: str | None = None  # idle, running, waiting_for_confirmation, finished, ... (None until reported)
    start: str | None = None  # "warm" (a pool sandbox was claimed) or "cold" (a new task)
    task_timestamps: dict[str, str] | None = None  # cold starts on ECS: createdAt, pullStartedAt, ...
    start_hops: tuple[StartHop, ...] | None = None  # where the start's time went (once RUNNING)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_settled(self) -> bool:
        """No longer starting: RUNNING, ERROR, or closed (STOPPED, ARCHIVED)."""
        return self.conversation_status != STARTING

    @classmethod
    def from_json(cls, data: object) -> Conversation:
        body = _as_object(data, "a conversation")
        details = body.get("error_details")
        task_timestamps = body.get("task_timestamps")
        confirmation = body.get("confirmation_mode")
        created, updated = _optional_str(body, "created_at"), _optional_str(body, "updated_at")
        return cls(
            conversation_id=_require(body, "conversation_id", str),
            conversation_status=_require(body, "conversation_status", str),
            runtime_status=_optional_str(body, "runtime_status") or "",
            title=_optional_str(body, "title") or "",
            status_reason=_optional_str(body, "status_reason"),
            error_code=_optional_str(body, "error_code"),
            error_message=_optional_str(body, "error_message"),
            error_details=dict(details) if isinstance(details, Mapping) else None,
            repository=_optional_str(body, "repository"),
            git_provider=_optional_str(body, "git_provider"),
            selected_branch=_optional_str(body, "selected_branch"),
            commit=_optional_str(body, "commit"),
            trigger=_optional_str(body, "trigger"),
            agent=_optional_str(body, "agent"),
            max_iterations=_optional_int(body, "max_iterations"),
            confirmation_mode=confirmation if isinstance(confirmation, bool) else None,
            security_analyzer=_optional_str(body, "security_analyzer"),
            llm_model=_optional_str(body, "llm_model"),
            runtime=_optional_str(body, "runtime"),
            sandbox_image=_optional_str(body, "sandbox_image"),
            created_at=parse_timestamp(created) if created else None,
            updated_at=parse_timestamp(updated) if updated else None,
            timeline=tuple(TimelineEntry.from_json(entry) for entry in body.get("timeline") or ()),
            agent_server_url=_optional_str(body, "agent_server_url"),
            agent_conversation_id=_optional_str(body, "agent_conversation_id"),
            microagents=tuple(str(name) for name in body.get("microagents") or ()),
            agent_status=_optional_str(body, "agent_status"),
            start=_optional_str(body, "start"),
            task_timestamps=(
                {str(name): str(at) for name, at in task_timestamps.items()}
                if isinstance(task_timestamps, Mapping)
                else None
            ),
            start_hops=(
                tuple(StartHop.from_json(hop) for hop in body["start_hops"])
                if isinstance(body.get("start_hops"), list)
                else None
            ),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class CreatedConversation:
    """`POST /api/conversations`: the new id and its first status (STARTING)."""

    conversation_id: str
    conversation_status: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> CreatedConversation:
        body = _as_object(data, "a created conversation")
        return cls(
            conversation_id=_require(body, "conversation_id", str),
            conversation_status=_require(body, "conversation_status", str),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One conversation of the list (OpenHands' `ConversationInfo` plus the status fields)."""

    conversation_id: str
    conversation_status: str
    runtime_status: str
    title: str = ""
    error_code: str | None = None
    selected_repository: str | None = None
    selected_branch: str | None = None
    git_provider: str | None = None
    trigger: str | None = None
    created_at: datetime | None = None
    last_updated_at: datetime | None = None
    url: str | None = None  # the agent-server of a RUNNING conversation
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> ConversationSummary:
        body = _as_object(data, "a conversation of the list")
        created, updated = _optional_str(body, "created_at"), _optional_str(body, "last_updated_at")
        return cls(
            conversation_id=_require(body, "conversation_id", str),
            conversation_status=_require(body, "conversation_status", str),
            runtime_status=_optional_str(body, "runtime_status") or "",
            title=_optional_str(body, "title") or "",
            error_code=_optional_str(body, "error_code"),
            selected_repository=_optional_str(body, "selected_repository"),
            selected_branch=_optional_str(body, "selected_branch"),
            git_provider=_optional_str(body, "git_provider"),
            trigger=_optional_str(body, "trigger"),
            created_at=parse_timestamp(created) if created else None,
            last_updated_at=parse_timestamp(updated) if updated else None,
            url=_optional_str(body, "url"),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """One page of `GET /api/conversations`, newest first; `next_page_id` is None on the last page."""

    results: tuple[ConversationSummary, ...]
    next_page_id: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> ConversationPage:
        body = _as_object(data, "a page of conversations")
        results = body.get("results")
        if not isinstance(results, list):
            raise MalformedResponse(f"expected a list 'results' in {sorted(body)}")
        return cls(
            results=tuple(ConversationSummary.from_json(item) for item in results),
            next_page_id=_optional_str(body, "next_page_id") or None,
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class ConversationAction:
    """What stop and start answer: the status the conversation has now, and what happened."""

    conversation_id: str
    conversation_status: str
    message: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> ConversationAction:
        body = _as_object(data, "the answer of stop or start")
        return cls(
            conversation_id=_require(body, "conversation_id", str),
            conversation_status=_require(body, "conversation_status", str),
            message=_optional_str(body, "message"),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """`GET /api/settings`: secrets are never returned, only whether they are set."""

    agent: str
    max_iterations: int
    confirmation_mode: bool
    security_analyzer: str | None
    llm_model: str | None
    llm_base_url: str | None
    llm_api_key_set: bool
    provider_tokens_set: dict[str, bool]
    sandbox_base_container_image: str | None
    updated_at: datetime | None
    authorized_event_sources: tuple[str, ...] = ()  # EventBridge sources allowed to create conversations
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> Settings:
        body = _as_object(data, "settings")
        tokens = body.get("provider_tokens_set")
        updated = _optional_str(body, "updated_at")
        return cls(
            agent=_require(body, "agent", str),
            max_iterations=_require(body, "max_iterations", int),
            confirmation_mode=_require(body, "confirmation_mode", bool),
            security_analyzer=_optional_str(body, "security_analyzer"),
            llm_model=_optional_str(body, "llm_model"),
            llm_base_url=_optional_str(body, "llm_base_url"),
            llm_api_key_set=bool(body.get("llm_api_key_set")),
            provider_tokens_set={str(k): bool(v) for k, v in tokens.items()} if isinstance(tokens, Mapping) else {},
            sandbox_base_container_image=_optional_str(body, "sandbox_base_container_image"),
            updated_at=parse_timestamp(updated) if updated else None,
            authorized_event_sources=tuple(str(source) for source in body.get("authorized_event_sources") or ()),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class Quota:
    """`GET /api/quota`: how many conversations may be active at once, how many are, and what a
    creation at the limit does (`close_oldest` closes the least recently active, `reject` is a 429)."""

    limit: int
    active: int
    available: int
    policy: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> Quota:
        body = _as_object(data, "the quota")
        return cls(
            limit=_require(body, "limit", int),
            active=_require(body, "active", int),
            available=_require(body, "available", int),
            policy=_require(body, "policy", str),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class SuggestedTask:
    """`suggested_task` of the create body: start from a task the provider suggests."""

    repo: str
    issue_number: int
    title: str
    task_type: str  # MERGE_CONFLICTS, FAILING_CHECKS, UNRESOLVED_COMMENTS, OPEN_ISSUE, OPEN_PR, CREATE_MICROAGENT
    git_provider: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "repo": self.repo,
            "issue_number": self.issue_number,
            "title": self.title,
            "task_type": self.task_type,
        }
        if self.git_provider is not None:
            body["git_provider"] = self.git_provider
        return body


@dataclass(frozen=True, slots=True)
class CreateMicroagent:
    """`create_microagent` of the create body."""

    repo: str
    git_provider: str | None = None
    title: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"repo": self.repo}
        if self.git_provider is not None:
            body["git_provider"] = self.git_provider
        if self.title is not None:
            body["title"] = self.title
        return body


# -- the channel to a running conversation ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AgentEvent:
    """One event of the agent's transcript: a stable envelope around the agent-server's own JSON.

    `kind` is the agent-server's (`MessageEvent`, `ActionEvent`, `ObservationEvent`,
    `ConversationStateUpdateEvent`, `AgentErrorEvent`...); `event` is None when the service kept only
    a marker (`error_code`, e.g. an event over the size cap)."""

    id: str
    timestamp: str
    source: str
    kind: str
    event: dict[str, Any] | None = None
    error_code: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> AgentEvent:
        body = _as_object(data, "an agent event")
        event = body.get("event")
        return cls(
            id=_require(body, "id", str),
            timestamp=_optional_str(body, "timestamp") or "",
            source=_optional_str(body, "source") or "",
            kind=_optional_str(body, "kind") or "",
            event=dict(event) if isinstance(event, Mapping) else None,
            error_code=_optional_str(body, "error_code"),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class AgentEventPage:
    """`GET /api/conversations/{id}/events`: oldest first; `next_page_id` is where the next read starts
    (pass it back unchanged, with `wait=` to follow the conversation)."""

    results: tuple[AgentEvent, ...]
    next_page_id: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> AgentEventPage:
        body = _as_object(data, "a page of agent events")
        results = body.get("results")
        if not isinstance(results, list):
            raise MalformedResponse(f"expected a list 'results' in {sorted(body)}")
        return cls(
            results=tuple(AgentEvent.from_json(item) for item in results),
            next_page_id=_optional_str(body, "next_page_id") or None,
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    """What `POST .../messages` and `POST .../confirm` answer (202): the id of the queued item."""

    status: str
    message_id: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> Accepted:
        body = _as_object(data, "an accepted message")
        return cls(status=_require(body, "status", str), message_id=_require(body, "message_id", str), raw=dict(body))


@dataclass(frozen=True, slots=True)
class ChangedFile:
    path: str
    status: str  # added, modified, deleted
    additions: int
    deletions: int

    @classmethod
    def from_json(cls, data: object) -> ChangedFile:
        body = _as_object(data, "a changed file")
        return cls(
            path=_require(body, "path", str),
            status=_require(body, "status", str),
            additions=_optional_int(body, "additions") or 0,
            deletions=_optional_int(body, "deletions") or 0,
        )


@dataclass(frozen=True, slots=True)
class Workspace:
    """`GET /api/conversations/{id}/workspace`: what the agent changed, as the sandbox last published it."""

    branch: str | None
    head_commit: str | None
    files: tuple[ChangedFile, ...]
    diff: str
    diff_truncated: bool
    published_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> Workspace:
        body = _as_object(data, "a workspace")
        published = _optional_str(body, "published_at")
        return cls(
            branch=_optional_str(body, "branch"),
            head_commit=_optional_str(body, "head_commit"),
            files=tuple(ChangedFile.from_json(item) for item in body.get("files") or ()),
            diff=_optional_str(body, "diff") or "",
            diff_truncated=body.get("diff_truncated") is True,
            published_at=parse_timestamp(published) if published else None,
            raw=dict(body),
        )
