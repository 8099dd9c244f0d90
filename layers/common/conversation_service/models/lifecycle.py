"""Bodies of the lifecycle endpoints: list, rename, stop, start, delete, quota.

Shapes follow OpenHands' `openhands/server/routes/manage_conversations.py`: the listing is a
`ConversationInfoResultSet` (`results`, `next_page_id`), stop and start answer a
`ConversationResponse`, PATCH and DELETE answer `true`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from conversation_service.models.base import ServiceModel, StrictModel
from conversation_service.models.domain import Conversation, ConversationStatus

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_TITLE_LENGTH = 200


class ConversationSummary(ServiceModel):
    """One conversation in a listing (OpenHands' `ConversationInfo`, plus our status fields)."""

    conversation_id: str
    title: str
    status: ConversationStatus = Field(description="OpenHands' name for conversation_status")
    conversation_status: ConversationStatus
    runtime_status: str
    error_code: str | None = None
    selected_repository: str | None = None
    selected_branch: str | None = None
    git_provider: str | None = None
    trigger: str
    created_at: str
    last_updated_at: str
    url: str | None = Field(default=None, description="The agent-server of a RUNNING conversation")

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationSummary:
        return cls(
            conversation_id=conversation.conversation_id,
            title=conversation.title,
            status=conversation.conversation_status,
            conversation_status=conversation.conversation_status,
            runtime_status=conversation.runtime_status,
            error_code=conversation.error_code,
            selected_repository=conversation.repository,
            selected_branch=conversation.selected_branch,
            git_provider=conversation.git_provider,
            trigger=conversation.trigger,
            created_at=conversation.created_at,
            last_updated_at=conversation.updated_at,
            url=conversation.agent_server_url,
        )


class ConversationPage(ServiceModel):
    """`GET /api/conversations`: newest first; pass `next_page_id` back as `page_id` for more."""

    results: list[ConversationSummary]
    next_page_id: str | None = None


class UpdateConversationRequest(StrictModel):
    """`PATCH /api/conversations/{id}`."""

    title: str = Field(min_length=1, max_length=MAX_TITLE_LENGTH)

    @field_validator("title")
    @classmethod
    def _clean(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the title is blank")
        if any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ValueError("the title contains control characters")
        return value


class ConversationActionResponse(ServiceModel):
    """Answer of stop and start (OpenHands' `ConversationResponse`)."""

    status: Literal["ok"] = "ok"
    conversation_id: str
    message: str | None = None
    conversation_status: ConversationStatus


class QuotaView(ServiceModel):
    """`GET /api/quota`: how many conversations may be active at once, and how many are."""

    limit: int
    active: int
    available: int
    policy: str = Field(description="close_oldest: a new conversation closes the least recently active; reject: 429")
