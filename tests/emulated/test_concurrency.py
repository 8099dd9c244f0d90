"""At most MAX_ACTIVE_CONVERSATIONS (3) active conversations per user, under either policy and
under concurrent requests.

What moto guarantees (moto 5.2.5, read in moto/dynamodb/models/__init__.py and
moto/moto_server/): nothing about concurrency. `transact_write_items` checks conditions and
applies writes item by item, with no lock, and rolls back by restoring a deep copy of the whole
table taken at its start; moto's only lock (`DomainDispatcherApplication.lock`) guards choosing
the backend, not running the request. In-process `mock_aws` with threads and `ThreadedMotoServer`
(werkzeug, a thread per request) both interleave transactions. Running this race there with the
code unchanged we saw: in-process, 500s ("dictionary changed size during iteration" inside moto's
deepcopy), 43 successes but 34 items, 33 STARTING items against a counter of 0; on
ThreadedMotoServer, 50 successes but 35 items, 9 STARTING against a counter of 3. Those are moto's
races, not ours: a race test there proves nothing either way.

So the race runs against tests/support/serial_moto.py: moto in its own process handling one
request at a time. Every DynamoDB call is then atomic, which real DynamoDB guarantees
(TransactWriteItems is serializable), while the 50 requests still interleave their calls in any
order, which is where a read-then-write bug lives. Checked by mutation: with the limit read and
then written instead of conditioned in the transaction, or with the victim closed without its
"still active" condition, the race ends with 49-50 active conversations. What this does not model: DynamoDB's
TransactionConflictException under contention and the lag of the ActiveByUser index (a GSI is
eventually consistent; moto's is immediate).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from conversation_service import services
from conversation_service.logic.clock import now_epoch_ms, now_iso
from conversation_service.models.domain import ConversationStatus

from tests.emulated.support import (
    active_counter,
    active_index_ids,
    configure_user,
    conversation_item,
    conversation_items,
    create,
)

TOO_MANY = "AGENT_ERROR$TOO_MANY_CONVERSATIONS"


def status_of(tables: dict[str, str], conversation_id: str) -> str:
    return conversation_item(tables["conversations"], conversation_id)["conversation_status"]["S"]


def create_spaced(count: int) -> list[str]:
    """Conversations whose last activity is strictly ordered (last_active_at is in milliseconds)."""
    ids = []
    for _ in range(count):
        response = create({})
        assert response.status == 200, response.body
        ids.append(response.body["conversation_id"])
        time.sleep(0.003)
    return ids


def assert_active(tables: dict[str, str], user_id: str, expected: int) -> None:
    assert len(active_index_ids(tables["conversations"], user_id)) == expected
    assert active_counter(tables["users"], user_id) == expected


# -- close_oldest (the spec) ----------------------------------------------------------------
def test_the_fourth_conversation_closes_the_oldest(user, tables) -> None:
    first, second, third = create_spaced(3)
    assert_active(tables, user, 3)
    fourth = create({})
    assert fourth.status == 200, fourth.body
    closed = conversation_item(tables["conversations"], first)
    assert closed["conversation_status"] == {"S": "STOPPED"}
    assert closed["status_reason"] == {"S": TOO_MANY}
    assert "active_user_id" not in closed
    for conversation_id in (second, third, fourth.body["conversation_id"]):
        assert status_of(tables, conversation_id) == "STARTING"
    assert_active(tables, user, 3)


def test_it_is_the_least_recently_active_that_is_closed_not_the_oldest(user, tables) -> None:
    first, second, _ = create_spaced(3)
    time.sleep(0.003)
    assert services.conversation_store().mark_running(first, at=now_iso(), last_active_at=now_epoch_ms())
    assert create({}).status == 200
    assert status_of(tables, first) == "RUNNING"
    assert status_of(tables, second) == "STOPPED"
    assert_active(tables, user, 3)


def test_the_limit_comes_from_configuration(user, tables, service_env) -> None:
    service_env(MAX_ACTIVE_CONVERSATIONS="2")
    first, _ = create_spaced(2)
    assert create({}).status == 200
    assert status_of(tables, first) == "STOPPED"
    assert_active(tables, user, 2)


def test_users_do_not_close_each_others_conversations(user, tables) -> None:
    configure_user("user-2")
    mine = create_spaced(3)
    for _ in range(3):
        assert create({}, user_id="user-2").status == 200
    assert all(status_of(tables, conversation_id) == "STARTING" for conversation_id in mine)
    assert_active(tables, "user-1", 3)
    assert_active(tables, "user-2", 3)


def test_closing_a_conversation_frees_its_slot(user, tables, service_env) -> None:
    service_env(CONCURRENCY_POLICY="reject")
    first, *_ = create_spaced(3)
    assert create({}).status == 429
    assert services.conversation_store().deactivate(first, user, ConversationStatus.STOPPED, at=now_iso())
    assert_active(tables, user, 2)
    assert create({}).status == 200
    assert_active(tables, user, 3)


# -- reject -------------------------------------------------------------------------------------
def test_reject_policy_answers_429_with_limit_current_and_retry_after(user, tables, service_env) -> None:
    service_env(CONCURRENCY_POLICY="reject")
    existing = create_spaced(3)
    response = create({})
    assert response.status == 429
    assert response.body["status"] == "error"
    assert response.body["msg_id"] == "CONCURRENCY_LIMIT_REACHED"
    assert (response.body["limit"], response.body["current"]) == (3, 3)
    assert int(response.headers["retry-after"]) > 0
    assert all(status_of(tables, conversation_id) == "STARTING" for conversation_id in existing)
    assert len(conversation_items(tables["conversations"])) == 3
    assert_active(tables, user, 3)


# -- the race ---------------------------------------------------------------------------------------
def _server_tables(endpoint: str) -> list[str]:
    """ListTables sent straight to the server, bypassing boto3 (and any in-process mock)."""
    address = urlsplit(endpoint)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/",
            body=b"{}",
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": "DynamoDB_20120810.ListTables",
                "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, "
                "SignedHeaders=host, Signature=0",
            },
        )
        return list(json.load(connection.getresponse())["TableNames"])
    finally:
        connection.close()


PARALLEL = 50


@pytest.mark.parametrize("policy", ["close_oldest", "reject"])
def test_parallel_creates_never_exceed_the_limit(serial_server_stack, monkeypatch, policy: str) -> None:
    conversations_table = serial_server_stack.physical["ConversationsTable"]
    users_table = serial_server_stack.physical["UsersTable"]
    assert conversations_table in _server_tables(os.environ["AWS_ENDPOINT_URL"]), "the race must run on the server"
    monkeypatch.setenv("CONCURRENCY_POLICY", policy)
    services.reset()
    configure_user("user-1")
    start = threading.Barrier(PARALLEL)

    def one_create(_: int):
        start.wait()
        return create({"initial_user_msg": "race"})

    with ThreadPoolExecutor(PARALLEL) as pool:
        responses = list(pool.map(one_create, range(PARALLEL)))

    outcomes = Counter((response.status, (response.body or {}).get("msg_id")) for response in responses)
    items = conversation_items(conversations_table)
    by_status = Counter(item["conversation_status"]["S"] for item in items)
    index = active_index_ids(conversations_table, "user-1")
    counter = active_counter(users_table, "user-1")
    summary = f"{outcomes=} {by_status=} index={len(index)} {counter=}"

    assert len(index) <= 3 and counter <= 3, summary
    assert len(index) == counter == by_status["STARTING"], summary
    created = {response.body["conversation_id"] for response in responses if response.status == 200}
    assert created == {item["conversation_id"]["S"] for item in items}, "every 200 has its item, and no more"
    if policy == "reject":
        assert outcomes == {(200, None): 3, (429, "CONCURRENCY_LIMIT_REACHED"): PARALLEL - 3}, summary
    else:
        # Every request settles (each retry goes straight at the next oldest conversation), and
        # every success beyond three closed an older one.
        assert outcomes == {(200, None): PARALLEL}, summary
        assert counter == 3, summary
        assert by_status["STOPPED"] == len(created) - 3, summary
        assert all(
            item["status_reason"]["S"] == TOO_MANY for item in items if item["conversation_status"]["S"] == "STOPPED"
        )
