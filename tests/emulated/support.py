"""Helpers of the emulated suite: the API's routes called through the real handler, as a user would."""

from __future__ import annotations

from typing import Any

from tests.support.api_gateway import ApiResponse, api_event, call_api
from tests.support.dynamodb_items import active_counter, active_index_ids, conversation_item
from tests.support.dynamodb_items import scan_all as conversation_items
from tests.support.git_repositories import silent_server, smart_http_git_server
from tests.support.values import GITHUB_TOKEN, LLM_KEY

__all__ = [
    "GITHUB_TOKEN",
    "LLM_KEY",
    "ApiResponse",
    "active_counter",
    "active_index_ids",
    "call_api",
    "conversation_item",
    "conversation_items",
    "silent_server",
    "smart_http_git_server",
]

CONVERSATIONS = "/api/conversations"
SETTINGS = "/api/settings"


def create(body: Any = None, *, user_id: str | None = "user-1", headers: dict[str, str] | None = None) -> ApiResponse:
    return call_api(
        api_event("POST", CONVERSATIONS, body if body is not None else {}, user_id=user_id, headers=headers)
    )


def get_conversation(conversation_id: str, *, user_id: str | None = "user-1") -> ApiResponse:
    return call_api(api_event("GET", f"{CONVERSATIONS}/{conversation_id}", user_id=user_id))


def save_settings(body: dict[str, Any], *, user_id: str = "user-1") -> ApiResponse:
    return call_api(api_event("POST", SETTINGS, body, user_id=user_id))


def configure_user(user_id: str = "user-1", **extra: Any) -> ApiResponse:
    """A user who can create conversations: an LLM model and key (and whatever `extra` adds)."""
    response = save_settings(
        {"llm_model": "anthropic/claude-sonnet-4", "llm_api_key": LLM_KEY, **extra}, user_id=user_id
    )
    assert response.status == 200, response.body
    return response
