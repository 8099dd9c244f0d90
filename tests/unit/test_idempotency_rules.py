"""Keyed creates (Idempotency-Key) converge: the id derives from (user, key) and the conditional
write lets one attempt create it; every other attempt with that key and body gets its answer.
On in-memory ports; tests/emulated/test_idempotency.py keeps what needs DynamoDB's behaviour."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from conversation_service.config import ConcurrencyPolicy
from conversation_service.logic.conversations import keyed_conversation_id
from conversation_service.models.api import CreateConversationRequest
from conversation_service.models.errors import ConcurrencyLimitReached, IdempotencyConflict, InvalidRequest

from tests.support.in_memory import InMemoryService, unit_config


def test_the_same_key_and_body_answers_the_first_answer(service: InMemoryService, user: str) -> None:
    first = service.create({"initial_user_msg": "hello"}, idempotency_key="key-1")
    again = service.create({"initial_user_msg": "hello"}, idempotency_key="key-1")
    assert again == first == keyed_conversation_id(user, "key-1")
    assert len(service.conversations.items) == 1
    assert service.users.active_count(user) == 1


def test_without_a_key_every_request_creates(service: InMemoryService, user: str) -> None:
    service.create({"initial_user_msg": "hello"})
    service.create({"initial_user_msg": "hello"})
    assert len(service.conversations.items) == 2


def test_the_same_key_with_another_body_is_a_conflict(service: InMemoryService, user: str) -> None:
    service.create({"initial_user_msg": "one"}, idempotency_key="key-1")
    with pytest.raises(IdempotencyConflict):
        service.create({"initial_user_msg": "two"}, idempotency_key="key-1")
    assert len(service.conversations.items) == 1


def test_different_users_with_the_same_key_are_independent(service: InMemoryService, user: str) -> None:
    service.configure_user("user-2")
    mine = service.create({}, idempotency_key="shared")
    theirs = service.create({}, user_id="user-2", idempotency_key="shared")
    assert mine != theirs
    assert sorted(item["user_id"] for item in service.conversations.items.values()) == ["user-1", "user-2"]


def test_a_key_is_remembered_as_long_as_its_conversation_exists(service: InMemoryService, user: str) -> None:
    first = service.create({}, idempotency_key="key-1")
    conversation = service.conversations.get(first)
    assert conversation is not None
    service.lifecycle().stop(user, first)
    assert service.create({}, idempotency_key="key-1") == first  # still the first answer, stopped or not
    service.lifecycle().delete(user, first)
    assert service.create({}, idempotency_key="key-1") == first  # a new conversation under the same id
    assert service.conversations.get(first).run == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("key", ["", "   ", "k" * 256])
def test_an_unusable_key_is_refused(service: InMemoryService, user: str, key: str) -> None:
    with pytest.raises(InvalidRequest, match="Idempotency-Key"):
        service.create({}, idempotency_key=key)
    assert service.conversations.items == {}


def test_a_refused_request_can_be_retried_with_the_same_key(service: InMemoryService) -> None:
    from conversation_service.models.errors import SettingsNotFound

    with pytest.raises(SettingsNotFound):
        service.create({}, idempotency_key="key-1")
    service.configure_user("user-1")
    assert service.create({}, idempotency_key="key-1") == keyed_conversation_id("user-1", "key-1")


def test_a_retry_that_meets_its_first_attempt_mid_write_gets_the_first_answer(
    service: InMemoryService, user: str
) -> None:
    """The first attempt's write lands between the retry's snapshot and its own write (the retry
    inside the invocation window): the retry's conditional write is refused and it answers the
    conversation it finds."""
    first_attempt = service.conversation_service()
    request = CreateConversationRequest(initial_user_msg="hello")

    def first_lands(name: str) -> None:
        service.conversations.before_write = None
        first_attempt.create(user, request, "key-1")

    service.conversations.before_write = first_lands
    assert service.create({"initial_user_msg": "hello"}, idempotency_key="key-1") == keyed_conversation_id(
        user, "key-1"
    )
    assert len(service.conversations.items) == 1
    assert service.users.active_count(user) == 1


def test_parallel_attempts_with_one_key_create_one_conversation(service: InMemoryService, user: str) -> None:
    start = threading.Barrier(8)

    def attempt(_: int) -> str:
        start.wait()
        return service.create({"initial_user_msg": "hello"}, idempotency_key="burst")

    with ThreadPoolExecutor(8) as pool:
        answers = set(pool.map(attempt, range(8)))
    assert answers == {keyed_conversation_id(user, "burst")}
    assert len(service.conversations.items) == 1
    assert service.users.active_count(user) == 1


def test_a_replayed_key_at_the_limit_answers_without_closing_anything(service: InMemoryService, user: str) -> None:
    service.config = unit_config(concurrency_policy=ConcurrencyPolicy.REJECT)
    keyed = service.create({}, idempotency_key="key-1")
    service.create()
    service.create()
    assert service.create({}, idempotency_key="key-1") == keyed
    with pytest.raises(ConcurrencyLimitReached):
        service.create({}, idempotency_key="key-2")
    assert service.users.active_count(user) == 3
