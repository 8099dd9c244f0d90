"""The slot policy (logic/slot_policy.py) is one rule, with one retry budget, used by a create, a
start again and a create from an event: each test hands one SlotPolicy object to all three and
checks they answer as that object says, not as the configuration or a copy of the rule would."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conversation_service.config import ConcurrencyPolicy
from conversation_service.logic.conversations import ConversationService
from conversation_service.logic.event_intake import EventIntake
from conversation_service.logic.lifecycle import LifecycleService
from conversation_service.logic.slot_policy import TOO_MANY_CONVERSATIONS, SlotClaim, SlotPolicy
from conversation_service.models.api import CreateConversationRequest
from conversation_service.models.domain import ConversationStatus
from conversation_service.models.errors import ConcurrencyLimitReached, ConversationConflict, ConversationNoLongerActive

from tests.support.in_memory import InMemoryService

USER = "user-1"
SOURCE = "acme.tickets"


class CountingPolicy(SlotPolicy):
    """The policy, counting who asks it for a slot."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claims: list[str] = []

    def claim[T](self, claim: SlotClaim[T], limit: int, *, seen_active: int | None = None) -> T:
        self.claims.append(type(claim).__name__)
        return super().claim(claim, limit, seen_active=seen_active)


def _three_callers(
    memory: InMemoryService, policy: SlotPolicy
) -> tuple[ConversationService, LifecycleService, EventIntake]:
    create = ConversationService(
        memory.config, memory.conversations, memory.users, memory.context, slot_policy=policy, sleep=memory.sleep
    )
    lifecycle = LifecycleService(
        memory.config, memory.conversations, memory.users, memory.page_tokens, slot_policy=policy, sleep=memory.sleep
    )
    return create, lifecycle, EventIntake(create, [SOURCE], memory.dead_letters)


def _event(key: str) -> str:
    detail = {"user_id": USER, "request": {}, "idempotency_key": key}
    event = {
        "version": "0",
        "id": key,
        "detail-type": "CreateConversation",
        "source": SOURCE,
        "account": "123456789012",
        "time": "2026-11-26T12:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }
    return json.dumps(event)


def _at_the_limit_with_one_stopped(
    memory: InMemoryService, create: ConversationService, lifecycle: LifecycleService
) -> str:
    """Three active conversations (the limit) and a fourth, stopped, to start again."""
    memory.configure_user(USER, authorized_event_sources=[SOURCE])
    stopped = create.create(USER, CreateConversationRequest()).conversation_id
    lifecycle.stop(USER, stopped)
    for _ in range(3):
        create.create(USER, CreateConversationRequest())
    assert len(memory.conversations.active_ids(USER)) == 3
    return stopped


def test_create_start_again_and_event_intake_follow_the_one_policy_object() -> None:
    # The configuration says close_oldest; the policy object handed to all three says reject.
    memory = InMemoryService()
    assert memory.config.concurrency_policy == ConcurrencyPolicy.CLOSE_OLDEST
    policy = CountingPolicy(ConcurrencyPolicy.REJECT, memory.conversations, sleep=memory.sleep)
    create, lifecycle, intake = _three_callers(memory, policy)
    stopped = _at_the_limit_with_one_stopped(memory, create, lifecycle)
    policy.claims.clear()
    active_before = sorted(memory.conversations.active_ids(USER))

    with pytest.raises(ConcurrencyLimitReached):
        create.create(USER, CreateConversationRequest())
    with pytest.raises(ConcurrencyLimitReached):
        lifecycle.start(USER, stopped)
    refused = intake.handle(_event("ticket-1"), "message-1")

    assert refused.refused == ConcurrencyLimitReached.msg_id
    assert policy.claims == ["_NewConversation", "_NextRun", "_NewConversation"]
    assert sorted(memory.conversations.active_ids(USER)) == active_before  # nothing was closed


def test_under_close_oldest_all_three_replace_the_least_recently_active() -> None:
    memory = InMemoryService()
    policy = CountingPolicy(ConcurrencyPolicy.CLOSE_OLDEST, memory.conversations, sleep=memory.sleep)
    create, lifecycle, intake = _three_callers(memory, policy)
    stopped = _at_the_limit_with_one_stopped(memory, create, lifecycle)
    policy.claims.clear()

    closed = []
    for act in (
        lambda: create.create(USER, CreateConversationRequest()),
        lambda: lifecycle.start(USER, stopped),
        lambda: intake.handle(_event("ticket-2"), "message-2"),
    ):
        oldest = memory.conversations.least_recently_active(USER)
        assert oldest is not None
        act()
        after = memory.conversations.get(oldest.conversation_id)
        assert after is not None and after.conversation_status == ConversationStatus.STOPPED
        assert after.status_reason == TOO_MANY_CONVERSATIONS
        closed.append(oldest.conversation_id)
        assert len(memory.conversations.active_ids(USER)) == 3
        assert memory.users.active_count(USER) == 3

    assert len(set(closed)) == 3
    assert policy.claims == ["_NewConversation", "_NextRun", "_NewConversation"]


def test_create_and_start_again_spend_the_same_retry_budget() -> None:
    """Every replacement loses its race (the chosen oldest closes first): a create and a start
    again each give up after the policy's budget, with the same number of writes."""
    memory = InMemoryService()
    policy = SlotPolicy(ConcurrencyPolicy.CLOSE_OLDEST, memory.conversations, sleep=memory.sleep, max_attempts=7)
    create, lifecycle, _ = _three_callers(memory, policy)
    stopped = _at_the_limit_with_one_stopped(memory, create, lifecycle)

    attempts: list[str] = []

    def victim_closed_first(name: str) -> None:
        attempts.append(name)
        if name.endswith("_replacing"):
            raise ConversationNoLongerActive()

    memory.conversations.before_write = victim_closed_first
    with pytest.raises(ConversationConflict):
        create.create(USER, CreateConversationRequest())
    creating, attempts[:] = list(attempts), []
    with pytest.raises(ConversationConflict):
        lifecycle.start(USER, stopped)
    # A create knows from its snapshot that the user is at the limit; a start again learns it
    # from its first write, refused, and then replaces: seven writes each.
    assert creating == ["insert_replacing"] * 7
    assert attempts == ["reactivate_within_limit"] + ["reactivate_replacing"] * 6
