"""The channel to a running conversation (docs/sandbox-protocol.md): what the sandbox sends in
(agent events, the agent's status, its workspace), what it pulls (the inbox), and what the owner
reads and sends through the API."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field

from conversation_service.models.base import ServiceModel, StrictModel

MAX_EVENTS_PER_POST = 500
MAX_MESSAGE_CHARS = 100_000
MAX_IMAGE_URLS = 20
MAX_WAIT_SECONDS = 20
MAX_EVENTS_PAGE = 100
DEFAULT_EVENTS_PAGE = 50


class AgentStatus(StrEnum):
    """The agent-server's execution status (openhands.sdk ConversationExecutionStatus)."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING_FOR_CONFIRMATION = "waiting_for_confirmation"
    FINISHED = "finished"
    ERROR = "error"
    STUCK = "stuck"
    DELETING = "deleting"


# -- the sandbox's side ---------------------------------------------------------------------------
class AgentEventBatch(ServiceModel):
    """`POST /v1/agent-events`: the agent-server's events as its webhook posts them."""

    events: list[dict[str, Any]] = Field(max_length=MAX_EVENTS_PER_POST)


class RefusedEvent(ServiceModel):
    id: str
    error_code: str


class AgentEventsStored(ServiceModel):
    status: Literal["ok"] = "ok"
    stored: int = Field(description="Events stored by this call (redeliveries of stored events are not counted)")
    duplicates: int = 0
    refused: list[RefusedEvent] = Field(
        default_factory=list,
        description="Events over the per-event cap: kept in the transcript as a marker without their body",
    )


class AgentConversationInfo(ServiceModel):
    """`POST /v1/agent-conversation`: the agent-server's conversation info. Only the execution
    status is kept (the rest may hold the agent's settings)."""

    model_config = ConfigDict(extra="ignore")

    execution_status: AgentStatus


class InboxItem(ServiceModel):
    item_id: str
    kind: Literal["message", "confirmation"]
    text: str | None = None
    image_urls: list[str] | None = None
    accept: bool | None = None
    reason: str | None = None


class InboxPage(ServiceModel):
    items: list[InboxItem]


class ChangedFile(StrictModel):
    path: str = Field(min_length=1, max_length=4096)
    status: str = Field(min_length=1, max_length=40, description="added, modified, deleted, renamed, ...")
    additions: int = Field(default=0, ge=0)
    deletions: int = Field(default=0, ge=0)


class WorkspaceSnapshot(ServiceModel):
    """`POST /v1/workspace` (the sandbox) and `GET /api/conversations/{id}/workspace` (the owner)."""

    model_config = ConfigDict(extra="ignore")

    branch: str | None = Field(default=None, max_length=1000)
    head_commit: str | None = Field(default=None, max_length=100)
    files: list[ChangedFile] = Field(default_factory=list, max_length=10_000)
    diff: str = ""
    diff_truncated: bool = False
    published_at: str | None = Field(default=None, description="When the sandbox published it (set by the service)")


# -- the owner's side -----------------------------------------------------------------------------
class AgentEventEnvelope(ServiceModel):
    """One event of the transcript: a stable envelope around the agent-server's own JSON."""

    id: str
    timestamp: str
    source: str
    kind: str
    event: dict[str, Any] | None = Field(description="The agent-server's event, secrets redacted; null when refused")
    error_code: str | None = Field(default=None, description="EVENT_TOO_LARGE when the body was over the cap")


class AgentEventPage(ServiceModel):
    results: list[AgentEventEnvelope]
    next_page_id: str = Field(
        description="Where the next page starts: pass it back unchanged (with wait= to follow the conversation)"
    )


class SendMessageRequest(StrictModel):
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    image_urls: list[str] = Field(default_factory=list, max_length=MAX_IMAGE_URLS)


class SendMessageResponse(ServiceModel):
    status: Literal["ok"] = "ok"
    message_id: str


class ConfirmRequest(StrictModel):
    accept: bool
    reason: str | None = Field(default=None, max_length=10_000)
