"""POST /api/conversations' body model: the spec's fields, nothing else (the API's answers:
tests/emulated/test_create_request.py)."""

from __future__ import annotations

import pytest
from conversation_service.models.api import CreateConversationRequest

SPEC_FIELDS = {
    "repository",
    "git_provider",
    "selected_branch",
    "initial_user_msg",
    "image_urls",
    "replay_json",
    "suggested_task",
    "create_microagent",
    "conversation_instructions",
    "mcp_config",
}


def test_the_request_model_has_exactly_the_spec_fields() -> None:
    assert set(CreateConversationRequest.model_fields) == SPEC_FIELDS
    assert all(not field.is_required() for field in CreateConversationRequest.model_fields.values())


@pytest.mark.parametrize("provider", ["GITHUB", "github", "GitHub", "gitlab", "GITLAB", "bitbucket", "azure_devops"])
def test_git_provider_is_case_insensitive(provider: str) -> None:
    assert CreateConversationRequest.model_validate({"git_provider": provider}).git_provider == provider.lower()
