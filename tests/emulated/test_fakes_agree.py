"""The in-memory stores tests/unit runs the logic on (tests/support/fakes.py) behave as `dal/`
does on (emulated) DynamoDB: each scenario here runs against both and must see the same
answers, refusals and counters. A fake that drifts from `dal/` fails here, not silently in a
unit test that proves nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conversation_service import services
from conversation_service.models.api import SettingsUpdate
from conversation_service.models.domain import Conversation, ConversationStatus, RuntimeStatus, TimelineEntry
from conversation_service.models.errors import (
    ActiveLimitReached,
    ConversationChanged,
    ConversationIdTaken,
    ConversationNoLongerActive,
)

from devstack.template_resources import StackResources
from tests.support.fakes import InMemoryConversationStore, InMemoryUserStore
from tests.support.in_memory import unit_config

AT = "2030-01-01T00:00:00.000Z"


@dataclass
class Stores:
    conversations: Any
    users: Any


@pytest.fixture(params=["in-memory", "dynamodb"])
def stores(request: pytest.FixtureRequest) -> Iterator[Stores]:
    if request.param == "in-memory":
        users = InMemoryUserStore()
        yield Stores(InMemoryConversationStore(users), users)
        return
    stack: StackResources = request.getfixturevalue("stack")
    assert stack.physical["ConversationsTable"]
    yield Stores(services.conversation_store(), services.user_store())


def conversation(number: int, user_id: str = "user-1", **fields: Any) -> Conversation:
    values: dict[str, Any] = {
        "conversation_id": f"{number:032x}",
        "user_id": user_id,
        "conversation_status": ConversationStatus.STARTING,
        "runtime_status": "STATUS$QUEUED",
        "title": f"Conversation {number}",
        "trigger": "gui",
        "created_at": f"2030-01-01T00:00:{number:02d}.000Z",
        "updated_at": f"2030-01-01T00:00:{number:02d}.000Z",
        "last_active_at": 1_000 + number,
        "agent": "CodeActAgent",
        "max_iterations": 100,
        "confirmation_mode": False,
        "llm_model": "m",
        "sandbox_image": "image",
        "runtime": "fargate",
        "timeline": [TimelineEntry(phase="STATUS$QUEUED", at=AT)],
    }
    return Conversation.model_validate({**values, **fields})


def test_a_slot_per_insert_up_to_the_limit_and_the_id_checked_first(stores: Stores) -> None:
    store = stores.conversations
    for number in (1, 2):
        store.insert_within_limit(conversation(number), 2)
    with pytest.raises(ConversationIdTaken) as taken:
        store.insert_within_limit(conversation(1, title="other"), 2)
    assert taken.value.existing is not None and taken.value.existing.title == "Conversation 1"
    with pytest.raises(ActiveLimitReached) as limit:
        store.insert_within_limit(conversation(3), 2)
    assert limit.value.current == 2
    assert stores.users.active_count("user-1") == 2
    assert store.get(f"{3:032x}") is None


def test_replacing_closes_the_victim_as_read_and_keeps_the_count(stores: Stores) -> None:
    store = stores.conversations
    store.insert_within_limit(conversation(1), 1)
    victim = store.least_recently_active("user-1")
    assert victim is not None and victim.conversation_id == f"{1:032x}"
    store.insert_replacing(conversation(2), victim, reason="AGENT_ERROR$TOO_MANY_CONVERSATIONS", at=AT)
    closed = store.get(victim.conversation_id, consistent=True)
    assert closed is not None and closed.conversation_status == ConversationStatus.STOPPED
    assert (closed.runtime_status, closed.status_reason) == ("STATUS$STOPPED", "AGENT_ERROR$TOO_MANY_CONVERSATIONS")
    assert stores.users.active_count("user-1") == 1
    with pytest.raises(ConversationNoLongerActive):
        store.insert_replacing(conversation(3), victim, reason="again", at=AT)
    assert store.get(f"{3:032x}") is None


def test_deactivate_only_the_active_run_and_only_once(stores: Stores) -> None:
    store = stores.conversations
    store.insert_within_limit(conversation(1), 3)
    conversation_id = f"{1:032x}"
    assert not store.deactivate(conversation_id, "user-1", ConversationStatus.ERROR, at=AT, run=2)
    assert store.deactivate(conversation_id, "user-1", ConversationStatus.ERROR, at=AT, error_code_value="X", run=1)
    assert not store.deactivate(conversation_id, "user-1", ConversationStatus.STOPPED, at=AT)
    closed = store.get(conversation_id, consistent=True)
    assert closed is not None and (closed.conversation_status, closed.error_code) == (ConversationStatus.ERROR, "X")
    assert stores.users.active_count("user-1") == 0


def test_writes_while_starting_and_one_context_delivery(stores: Stores) -> None:
    store = stores.conversations
    store.insert_within_limit(conversation(1), 3)
    conversation_id = f"{1:032x}"
    assert store.set_runtime_phase(conversation_id, RuntimeStatus.STARTING_RUNTIME, at=AT, run=1, task_arn="arn:t")
    assert not store.update_starting(conversation_id, run=2, task_arn="arn:other")
    assert store.claim_context_delivery(conversation_id, "sealed", run=1)
    assert not store.claim_context_delivery(conversation_id, "sealed-again", run=1)
    assert store.mark_running(conversation_id, at=AT, last_active_at=5_000, run=1, agent_server_url="http://a")
    assert not store.update_starting(conversation_id, task_arn="arn:late")
    running = store.get(conversation_id, consistent=True)
    assert running is not None
    assert (running.conversation_status, running.task_arn, running.agent_server_url) == (
        ConversationStatus.RUNNING,
        "arn:t",
        "http://a",
    )
    assert [entry.phase for entry in running.timeline] == ["STATUS$QUEUED", "STATUS$STARTING_RUNTIME", "STATUS$READY"]
    assert store.set_agent_status(conversation_id, 1, "running", at=AT, answer_stays=False)
    assert not store.set_agent_status(conversation_id, 2, "running", at=AT, answer_stays=False)


def test_start_again_is_the_next_run_as_read_within_the_limit(stores: Stores) -> None:
    store = stores.conversations
    store.insert_within_limit(conversation(1), 1)
    conversation_id = f"{1:032x}"
    store.update_starting(conversation_id, task_arn="arn:t", context_key="k")
    store.deactivate(conversation_id, "user-1", ConversationStatus.STOPPED, at=AT)
    stopped = store.get(conversation_id, consistent=True)
    store.insert_within_limit(conversation(2), 1)
    with pytest.raises(ActiveLimitReached):
        store.reactivate_within_limit(stopped, 1, at=AT, last_active_at=9_000)
    victim = store.least_recently_active("user-1")
    assert store.reactivate_replacing(stopped, victim, reason="r", at=AT, last_active_at=9_000) == 2
    again = store.get(conversation_id, consistent=True)
    assert again is not None and (again.run, again.conversation_status) == (2, ConversationStatus.STARTING)
    assert (again.task_arn, again.context_key) == (None, None)
    with pytest.raises(ConversationChanged):  # `stopped` is no longer as read
        store.reactivate_within_limit(stopped, 3, at=AT, last_active_at=9_001)
    assert stores.users.active_count("user-1") == 1


def test_delete_as_read_frees_an_active_slot(stores: Stores) -> None:
    store = stores.conversations
    store.insert_within_limit(conversation(1), 3)
    read = store.get(f"{1:032x}", consistent=True)
    store.set_runtime_phase(read.conversation_id, RuntimeStatus.STARTING_RUNTIME, at=AT)
    store.deactivate(read.conversation_id, "user-1", ConversationStatus.STOPPED, at=AT)
    with pytest.raises(ConversationChanged):
        store.delete(read)
    store.insert_within_limit(conversation(2), 3)
    store.delete(store.get(f"{2:032x}", consistent=True))
    assert store.get(f"{2:032x}", consistent=True) is None
    assert stores.users.active_count("user-1") == 0
    assert not store.rename(read.conversation_id, "user-2", "mine", at=AT)
    assert store.rename(read.conversation_id, "user-1", "renamed", at=AT)


def test_listing_newest_first_in_pages_with_filters(stores: Stores) -> None:
    store = stores.conversations
    for number in range(1, 6):
        store.insert_within_limit(conversation(number, repository="o/r" if number % 2 else None), 10)
    store.insert_within_limit(conversation(9, user_id="user-2"), 10)
    first, position = store.page_for_user("user-1", limit=2)
    assert [item.conversation_id for item in first] == [f"{5:032x}", f"{4:032x}"]
    assert position is not None
    rest, end = store.page_for_user("user-1", limit=10, start_after=position)
    assert [item.conversation_id for item in rest] == [f"{n:032x}" for n in (3, 2, 1)] and end is None
    filtered, _ = store.page_for_user("user-1", limit=10, repository="o/r")
    assert [item.conversation_id for item in filtered] == [f"{n:032x}" for n in (5, 3, 1)]
    assert store.least_recently_active("user-1").conversation_id == f"{1:032x}"


def test_settings_and_sealed_secrets(stores: Stores) -> None:
    from conversation_service.logic.settings import SettingsService

    SettingsService(unit_config(), stores.users).update(
        "user-1", SettingsUpdate(llm_model="m", llm_api_key="sk-test-0123456789abcdef")
    )
    settings = stores.users.get_settings("user-1")
    assert settings is not None and settings.llm_api_key_set and settings.sealed_secrets
    assert "sk-test" not in settings.sealed_secrets
    assert stores.users.open_secrets(settings).llm_api_key == "sk-test-0123456789abcdef"
    sealed = stores.users.seal_for("user-1", {"k": "v"}, conversation_id="c" * 32)
    assert stores.users.open_for("user-1", sealed, conversation_id="c" * 32) == {"k": "v"}
    with pytest.raises(Exception):  # noqa: B017 - KMS and the local box refuse with their own errors
        stores.users.open_for("user-1", sealed, conversation_id="d" * 32)
    snapshot = stores.conversations.creation_snapshot("user-1", f"{7:032x}")
    assert (snapshot.active_count, snapshot.existing) == (0, None)
    assert snapshot.settings is not None and snapshot.settings.llm_model == "m"
