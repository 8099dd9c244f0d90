"""Creating a conversation (logic/conversations.py) on in-memory ports: defaults, settings, ids,
the concurrency limit and its two policies, what is kept where. No AWS emulation."""

from __future__ import annotations

import itertools
import uuid

import pytest
from conversation_service.config import ConcurrencyPolicy
from conversation_service.logic.conversations import INLINE_REQUEST_LIMIT_BYTES
from conversation_service.logic.slot_policy import TOO_MANY_CONVERSATIONS
from conversation_service.logic.validation import validate_conversation_id
from conversation_service.models.api import CreateConversationRequest
from conversation_service.models.domain import AgentDefaults, ConversationStatus, ConversationTrigger
from conversation_service.models.errors import (
    AgentNotFound,
    ConcurrencyLimitReached,
    InvalidRequest,
    LLMAuthenticationMissing,
    SettingsNotFound,
)

from tests.support.in_memory import InMemoryService, unit_config
from tests.support.values import LLM_KEY


def test_a_new_conversation_is_starting_with_the_defaults_recorded(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    conversation = service.conversations.get(conversation_id)
    assert conversation is not None
    defaults = AgentDefaults()
    assert conversation.conversation_status == ConversationStatus.STARTING
    assert conversation.runtime_status == "STATUS$QUEUED"
    assert [entry.phase for entry in conversation.timeline] == ["STATUS$QUEUED"]
    assert (conversation.agent, conversation.max_iterations, conversation.confirmation_mode) == (
        defaults.agent,
        defaults.max_iterations,
        defaults.confirmation_mode,
    )
    assert conversation.security_analyzer == defaults.security_analyzer
    assert conversation.llm_model == "anthropic/claude-sonnet-4"
    assert conversation.sandbox_image == service.config.default_sandbox_image
    assert conversation.runtime == service.config.default_runtime
    assert conversation.title == f"Conversation {conversation_id[:5]}"
    assert conversation.trigger == ConversationTrigger.API.value
    assert service.users.active_count(user) == 1
    assert service.conversations.active_ids(user) == [conversation_id]


def test_user_settings_override_the_defaults(service: InMemoryService) -> None:
    service.configure_user(
        "user-2", agent="ReadOnlyAgent", max_iterations=7, confirmation_mode=True, security_analyzer="llm"
    )
    conversation = service.conversations.get(service.create(user_id="user-2"))
    assert conversation is not None
    assert (conversation.agent, conversation.max_iterations, conversation.confirmation_mode) == (
        "ReadOnlyAgent",
        7,
        True,
    )
    assert conversation.security_analyzer == "llm"


def test_the_llm_key_is_kept_sealed_for_its_user_only(service: InMemoryService, user: str) -> None:
    settings = service.users.get_settings(user)
    assert settings is not None and settings.sealed_secrets and LLM_KEY not in settings.sealed_secrets
    assert settings.llm_api_key_set is True
    assert service.users.open_secrets(settings).llm_api_key == LLM_KEY
    with pytest.raises(ValueError):
        service.users.secret_box.open(settings.sealed_secrets, owner="user-2")


@pytest.mark.parametrize(
    ("settings", "error"),
    [(None, SettingsNotFound), ({"llm_api_key": ""}, LLMAuthenticationMissing)],
)
def test_a_user_who_cannot_start_a_conversation_is_told_why_and_nothing_is_written(
    service: InMemoryService, settings: dict[str, str] | None, error: type[Exception]
) -> None:
    if settings is not None:
        service.configure_user("user-1", **settings)
    with pytest.raises(error):
        service.create()
    assert service.conversations.items == {}
    assert service.users.active_count("user-1") == 0


def test_an_agent_the_service_does_not_know_is_refused(service: InMemoryService, user: str) -> None:
    settings = service.users.get_settings(user)
    assert settings is not None
    settings.agent = "NoSuchAgent"  # stored before the agent list changed
    service.users.save_settings(settings, service.users.open_secrets(settings))
    with pytest.raises(AgentNotFound):
        service.create()


def test_a_branch_without_a_repository_is_refused(service: InMemoryService, user: str) -> None:
    with pytest.raises(InvalidRequest, match="selected_branch needs a repository"):
        service.create({"selected_branch": "main"})
    assert service.conversations.items == {}


def test_ids_are_fresh_uuid4_hex_and_valid(service: InMemoryService, user: str) -> None:
    ids = [service.create() for _ in range(3)]
    assert len(set(ids)) == 3
    for conversation_id in ids:
        assert uuid.UUID(hex=conversation_id).version == 4 and uuid.UUID(hex=conversation_id).hex == conversation_id
        validate_conversation_id(conversation_id)


def test_a_colliding_drawn_id_silently_yields_a_fresh_one(service: InMemoryService, user: str) -> None:
    drawn = itertools.chain(["a" * 32, "a" * 32], itertools.repeat("b" * 32))
    creating = service.conversation_service(id_factory=lambda: next(drawn))
    # (Bodies differ: two identical creates within one millisecond would be identical items, which
    # the logic takes for its own write sent again.)
    assert creating.create(user, CreateConversationRequest(initial_user_msg="one")).conversation_id == "a" * 32
    assert creating.create(user, CreateConversationRequest(initial_user_msg="two")).conversation_id == "b" * 32
    assert service.users.active_count(user) == 2


def test_a_collision_at_the_limit_also_yields_a_fresh_id(service: InMemoryService, user: str) -> None:
    existing = [service.create() for _ in range(3)]
    for order, conversation_id in enumerate(existing):
        assert service.conversations.update_starting(conversation_id, last_active_at=order + 1)
    before = service.conversations.item(existing[2])
    drawn = iter([existing[2], "f" * 32])
    response = service.conversation_service(id_factory=lambda: next(drawn)).create(user, CreateConversationRequest())
    assert response.conversation_id == "f" * 32
    assert service.conversations.item(existing[2]) == before
    assert service.conversations.get("f" * 32).conversation_status == ConversationStatus.STARTING  # type: ignore[union-attr]
    # The least recently active one made room, as for any fourth conversation.
    assert service.conversations.get(existing[0]).conversation_status == ConversationStatus.STOPPED  # type: ignore[union-attr]


def test_at_the_limit_the_least_recently_active_is_closed_not_the_oldest(service: InMemoryService, user: str) -> None:
    first, second, third = (service.create() for _ in range(3))
    # The first is the oldest but was active last (a message, say); the second was idle longest.
    assert service.conversations.mark_running(first, at="2030-01-01T00:00:00.000Z", last_active_at=10**13)
    assert service.conversations.update_starting(second, last_active_at=1)
    fourth = service.create()
    assert service.conversations.active_ids(user)[-1] == first
    assert set(service.conversations.active_ids(user)) == {third, fourth, first}
    closed = service.conversations.get(second)
    assert closed is not None and closed.conversation_status == ConversationStatus.STOPPED
    assert closed.status_reason == TOO_MANY_CONVERSATIONS
    assert closed.timeline[-1].phase == "STATUS$STOPPED"
    assert service.users.active_count(user) == 3


def test_the_limit_comes_from_the_user_then_the_configuration(service: InMemoryService, user: str) -> None:
    service.config = unit_config(max_active_conversations=1)
    first, second = service.create(), service.create()
    assert service.conversations.active_ids(user) == [second]
    assert service.conversations.get(first).conversation_status == ConversationStatus.STOPPED  # type: ignore[union-attr]
    settings = service.users.get_settings(user)
    assert settings is not None
    settings.max_active_conversations = 2  # the operator's per-user limit
    service.users.save_settings(settings, service.users.open_secrets(settings))
    third = service.create()
    assert sorted(service.conversations.active_ids(user)) == sorted([second, third])  # same millisecond: no order


def test_users_do_not_close_each_others_conversations(service: InMemoryService, user: str) -> None:
    service.configure_user("user-2")
    theirs = [service.create(user_id="user-2") for _ in range(3)]
    for _ in range(4):
        service.create()
    assert sorted(service.conversations.active_ids("user-2")) == sorted(theirs)
    assert (service.users.active_count(user), service.users.active_count("user-2")) == (3, 3)


def test_the_reject_policy_refuses_with_the_limit_and_current_count(service: InMemoryService, user: str) -> None:
    service.config = unit_config(concurrency_policy=ConcurrencyPolicy.REJECT, retry_after_seconds=17)
    kept = [service.create() for _ in range(3)]
    with pytest.raises(ConcurrencyLimitReached) as refused:
        service.create()
    assert refused.value.extra == {"limit": 3, "current": 3}
    assert refused.value.headers == {"Retry-After": "17"}
    assert sorted(service.conversations.active_ids(user)) == sorted(kept)
    assert len(service.conversations.items) == 3


def test_a_closed_conversation_frees_its_slot(service: InMemoryService, user: str) -> None:
    service.config = unit_config(concurrency_policy=ConcurrencyPolicy.REJECT)
    first, *_ = (service.create() for _ in range(3))
    assert service.conversations.deactivate(first, user, ConversationStatus.STOPPED, at="2030-01-01T00:00:00.000Z")
    assert not service.conversations.deactivate(first, user, ConversationStatus.STOPPED, at="2030-01-01T00:00:00Z")
    service.create()
    assert service.users.active_count(user) == 3


def test_a_large_request_goes_to_the_context_store_and_reads_back(service: InMemoryService, user: str) -> None:
    message = "x" * (INLINE_REQUEST_LIMIT_BYTES + 10)
    conversation = service.conversations.get(service.create({"initial_user_msg": message}))
    assert conversation is not None and conversation.request == {}
    assert conversation.request_s3_key == f"conversations/{conversation.conversation_id}/request.json"
    assert service.context.get_json(conversation.request_s3_key)["initial_user_msg"] == message


def test_a_refused_large_request_leaves_nothing_in_the_context_store(service: InMemoryService, user: str) -> None:
    service.config = unit_config(concurrency_policy=ConcurrencyPolicy.REJECT)
    for _ in range(3):
        service.create()
    with pytest.raises(ConcurrencyLimitReached):
        service.create({"initial_user_msg": "x" * (INLINE_REQUEST_LIMIT_BYTES + 10)})
    assert service.context.keys() == []


def test_mcp_servers_are_sealed_for_the_conversation_and_resealed_when_its_id_is_redrawn(
    service: InMemoryService, user: str
) -> None:
    drawn = itertools.chain(["a" * 32, "a" * 32], itertools.repeat("c" * 32))
    creating = service.conversation_service(id_factory=lambda: next(drawn))
    creating.create(user, CreateConversationRequest())
    servers = {"stdio_servers": [{"name": "fs", "command": "mcp-fs", "env": {"TOKEN": "mcp-secret-0123456789"}}]}
    request = CreateConversationRequest.model_validate({"mcp_config": servers})
    conversation_id = creating.create(user, request).conversation_id
    assert conversation_id == "c" * 32
    conversation = service.conversations.get(conversation_id)
    assert conversation is not None and conversation.sealed_mcp_config
    assert "mcp-secret" not in str(service.conversations.item(conversation_id))
    opened = service.users.open_for(user, conversation.sealed_mcp_config, conversation_id=conversation_id)
    assert opened["stdio_servers"][0]["env"] == {"TOKEN": "mcp-secret-0123456789"}
    with pytest.raises(ValueError):  # sealed for this conversation, not the id it was first drawn with
        service.users.open_for(user, conversation.sealed_mcp_config, conversation_id="a" * 32)


def test_the_view_is_the_owners_only(service: InMemoryService, user: str) -> None:
    from conversation_service.models.errors import ConversationNotFound

    conversation_id = service.create()
    creating = service.conversation_service()
    assert creating.view(user, conversation_id).conversation_id == conversation_id
    with pytest.raises(ConversationNotFound):
        creating.view("user-2", conversation_id)
    with pytest.raises(ConversationNotFound):
        creating.view(user, "f" * 32)
