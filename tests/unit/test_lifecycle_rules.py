"""Stopping, starting again, deleting, renaming and listing (logic/lifecycle.py) on in-memory
ports: the status model, the slot a status holds, the run a start again adds, page tokens."""

from __future__ import annotations

import pytest
from conversation_service.config import ConcurrencyPolicy
from conversation_service.logic.lifecycle import STOPPED_BY_USER
from conversation_service.models.domain import ConversationStatus
from conversation_service.models.errors import (
    ConcurrencyLimitReached,
    ConversationNotFound,
    InvalidPageToken,
    LLMAuthenticationMissing,
)

from tests.support.in_memory import InMemoryService, unit_config


def test_stop_frees_the_slot_and_a_second_stop_changes_nothing(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    lifecycle = service.lifecycle()
    stopped = lifecycle.stop(user, conversation_id)
    assert stopped.conversation_status == ConversationStatus.STOPPED
    conversation = service.conversations.get(conversation_id)
    assert conversation is not None and conversation.status_reason == STOPPED_BY_USER
    assert service.users.active_count(user) == 0
    again = lifecycle.stop(user, conversation_id)
    assert again.conversation_status == ConversationStatus.STOPPED and again.message == "Conversation was not running"
    assert service.conversations.item(conversation_id)["teardown_requested_at"]  # the consumer looks again
    assert service.users.active_count(user) == 0


def test_an_error_keeps_its_error_when_stopped(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    service.conversations.deactivate(
        conversation_id, user, ConversationStatus.ERROR, at="2030-01-01T00:00:00.000Z", error_code_value="X"
    )
    assert service.lifecycle().stop(user, conversation_id).conversation_status == ConversationStatus.ERROR
    assert service.conversations.get(conversation_id).error_code == "X"  # type: ignore[union-attr]


def test_start_again_is_the_next_run_with_a_fresh_timeline(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    service.conversations.update_starting(conversation_id, task_arn="arn:task/1", context_key="k")
    lifecycle = service.lifecycle()
    lifecycle.stop(user, conversation_id)
    assert lifecycle.start(user, conversation_id).conversation_status == ConversationStatus.STARTING
    conversation = service.conversations.get(conversation_id)
    assert conversation is not None
    assert (conversation.run, conversation.conversation_status) == (2, ConversationStatus.STARTING)
    assert [entry.phase for entry in conversation.timeline] == ["STATUS$QUEUED"]
    assert conversation.task_arn is None and conversation.context_key is None and conversation.status_reason is None
    assert service.users.active_count(user) == 1
    assert lifecycle.start(user, conversation_id).message == "Conversation is already active"
    assert service.conversations.get(conversation_id).run == 2  # type: ignore[union-attr]


def test_start_again_at_the_limit_follows_the_policy(service: InMemoryService, user: str) -> None:
    stopped = service.create()
    lifecycle = service.lifecycle()
    lifecycle.stop(user, stopped)
    others = [service.create() for _ in range(3)]
    service.config = unit_config(concurrency_policy=ConcurrencyPolicy.REJECT)
    with pytest.raises(ConcurrencyLimitReached):
        service.lifecycle().start(user, stopped)
    service.config = unit_config()
    service.lifecycle().start(user, stopped)
    assert len(service.conversations.active_ids(user)) == 3
    assert stopped in service.conversations.active_ids(user)
    closed = [other for other in others if other not in service.conversations.active_ids(user)]
    assert len(closed) == 1
    assert service.conversations.get(closed[0]).conversation_status == ConversationStatus.STOPPED  # type: ignore[union-attr]


def test_start_again_needs_usable_settings(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    service.lifecycle().stop(user, conversation_id)
    service.configure_user(user, llm_api_key="")
    with pytest.raises(LLMAuthenticationMissing):
        service.lifecycle().start(user, conversation_id)
    assert service.conversations.get(conversation_id).conversation_status == ConversationStatus.STOPPED  # type: ignore[union-attr]


def test_delete_frees_the_slot_and_a_second_delete_is_not_found(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    lifecycle = service.lifecycle()
    assert lifecycle.delete(user, conversation_id) is True
    assert service.conversations.get(conversation_id) is None
    assert service.users.active_count(user) == 0
    with pytest.raises(ConversationNotFound):
        lifecycle.delete(user, conversation_id)


def test_a_delete_that_races_a_status_change_reads_again(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()

    def closed_meanwhile(name: str) -> None:
        service.conversations.before_write = None
        service.conversations.deactivate(conversation_id, user, ConversationStatus.ERROR, at="2030-01-01T00:00:00Z")

    service.conversations.before_write = closed_meanwhile
    assert service.lifecycle().delete(user, conversation_id) is True
    assert service.conversations.get(conversation_id) is None
    assert service.users.active_count(user) == 0  # freed once, by the close, not twice
    assert len(service.sleeps) == 1


def test_nobody_else_can_stop_start_rename_or_delete(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    lifecycle = service.lifecycle()
    for action in (lifecycle.stop, lifecycle.start, lifecycle.delete):
        with pytest.raises(ConversationNotFound):
            action("user-2", conversation_id)
    with pytest.raises(ConversationNotFound):
        lifecycle.rename("user-2", conversation_id, "mine now")
    assert lifecycle.rename(user, conversation_id, "renamed")
    assert service.conversations.get(conversation_id).title == "renamed"  # type: ignore[union-attr]


def test_the_listing_is_newest_first_in_pages_that_only_continue_their_own_listing(
    service: InMemoryService, user: str
) -> None:
    service.configure_user("user-2")
    created = []
    for number in range(5):
        conversation_id = service.create()
        service.conversations.items[conversation_id]["created_at"] = f"2030-01-01T00:00:0{number}.000Z"
        created.append(conversation_id)
    service.create(user_id="user-2")
    lifecycle = service.lifecycle()
    first = lifecycle.search(user, limit=2)
    assert [summary.conversation_id for summary in first.results] == created[:-3:-1]
    assert first.next_page_id
    second = lifecycle.search(user, limit=2, page_id=first.next_page_id)
    third = lifecycle.search(user, limit=2, page_id=second.next_page_id)
    listed = [summary.conversation_id for page in (first, second, third) for summary in page.results]
    assert listed == created[::-1]
    assert third.next_page_id is None
    with pytest.raises(InvalidPageToken):  # another user's token
        lifecycle.search("user-2", page_id=first.next_page_id)
    with pytest.raises(InvalidPageToken):  # another listing's token
        lifecycle.search(user, page_id=first.next_page_id, conversation_trigger="gui")
    with pytest.raises(InvalidPageToken):
        lifecycle.search(user, page_id=first.next_page_id[:-2] + "xx")


def test_the_quota_counts_active_conversations(service: InMemoryService, user: str) -> None:
    service.create()
    quota = service.lifecycle().quota(user)
    assert (quota.limit, quota.active, quota.available, quota.policy) == (3, 1, 2, "close_oldest")
