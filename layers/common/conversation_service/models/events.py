"""The service's EventBridge events (docs/events.md): what it publishes and what it accepts.

Both schemas are versioned by `schema_version` in the detail. Version "1" only ever gains
optional fields; anything else is a new version.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from conversation_service.models.api import CreateConversationRequest
from conversation_service.models.base import ServiceModel, StrictModel

EVENT_SOURCE = "openhands.conversations"
STATUS_CHANGED = "ConversationStatusChanged"
AGENT_STATUS_CHANGED = "AgentStatusChanged"
CREATE_CONVERSATION = "CreateConversation"
DELETED = "DELETED"  # new_status of a conversation that no longer exists


class ConversationStatusChanged(ServiceModel):
    """Detail of `ConversationStatusChanged`: ids, statuses and codes. Never a secret, a message,
    a title or the repository's setup output."""

    schema_version: Literal["1"] = "1"
    change_id: str = Field(description="Unique per change; delivery is at least once, deduplicate on it")
    conversation_id: str
    user_id: str
    run: int = Field(description="1 for the first start, +1 for each POST .../start")
    old_status: str | None = Field(description="null when the conversation was just created")
    new_status: str = Field(description="STARTING, RUNNING, STOPPED, ERROR, or DELETED")
    old_runtime_status: str | None = None
    runtime_status: str | None = Field(description="STATUS$...; null once deleted")
    error_code: str | None = None
    status_reason: str | None = None
    trigger: str | None = None
    repository: str | None = None
    changed_at: str


class AgentStatusChanged(ServiceModel):
    """Detail of `AgentStatusChanged`: the agent of a conversation changed its execution status
    (it finished, needs a confirmation, went idle, failed...). Never a message or a secret."""

    schema_version: Literal["1"] = "1"
    change_id: str = Field(description="Unique per change; delivery is at least once, deduplicate on it")
    conversation_id: str
    user_id: str
    run: int
    old_agent_status: str | None = Field(description="null for the first status of a run")
    agent_status: str = Field(
        description="idle, running, paused, waiting_for_confirmation, finished, error, stuck (or deleting)"
    )
    conversation_status: str = Field(description="STARTING or RUNNING")
    changed_at: str


class CreateConversationDetail(StrictModel):
    """Detail of a `CreateConversation` event sent to the stack's bus by a trusted source."""

    schema_version: Literal["1"] = "1"
    user_id: str = Field(min_length=1, max_length=200)
    request: CreateConversationRequest = Field(default_factory=CreateConversationRequest)
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Repeats with the same key create one conversation; default: the event's id",
    )
