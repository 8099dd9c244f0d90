"""Idempotency-Key: a retried create returns the first answer and creates nothing new, whether
it arrives while the first attempt runs or after the first answer was lost."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import boto3
from botocore.exceptions import ReadTimeoutError
from conversation_service import services
from conversation_service.dal import aws
from conversation_service.logic.conversations import keyed_conversation_id
from conversation_service.models.api import CreateConversationRequest

from benchmarks.common import CallCounter
from tests.emulated.support import CONVERSATIONS, active_counter, call_api, configure_user, conversation_items, create
from tests.support.api_gateway import api_event


def test_the_same_key_and_body_returns_the_first_response(user, tables) -> None:
    body = {"initial_user_msg": "hello"}
    first = create(body, headers={"Idempotency-Key": "key-1"})
    again = create(body, headers={"Idempotency-Key": "key-1"})
    assert first.status == again.status == 200
    assert again.body == first.body
    assert len(conversation_items(tables["conversations"])) == 1


def test_without_a_key_every_request_creates(user, tables) -> None:
    create({"initial_user_msg": "hello"})
    create({"initial_user_msg": "hello"})
    assert len(conversation_items(tables["conversations"])) == 2


def test_the_same_key_with_another_body_is_a_conflict(user, tables) -> None:
    assert create({"initial_user_msg": "one"}, headers={"Idempotency-Key": "key-1"}).status == 200
    reused = create({"initial_user_msg": "two"}, headers={"Idempotency-Key": "key-1"})
    assert reused.status == 409
    assert reused.body["status"] == "error"
    assert reused.body["msg_id"] == "ERROR$IDEMPOTENCY_KEY_REUSED"
    assert len(conversation_items(tables["conversations"])) == 1


def test_different_users_with_the_same_key_are_independent(user, tables) -> None:
    configure_user("user-2")
    body = {"initial_user_msg": "hello"}
    mine = create(body, headers={"Idempotency-Key": "shared"})
    theirs = create(body, user_id="user-2", headers={"Idempotency-Key": "shared"})
    assert mine.status == theirs.status == 200
    assert mine.body["conversation_id"] != theirs.body["conversation_id"]
    owners = sorted(item["user_id"]["S"] for item in conversation_items(tables["conversations"]))
    assert owners == ["user-1", "user-2"]


def test_the_keyed_id_derives_from_user_and_key(user, tables) -> None:
    first = create({}, headers={"Idempotency-Key": "key-id"})
    assert first.body["conversation_id"] == keyed_conversation_id("user-1", "key-id")
    assert uuid.UUID(hex=first.body["conversation_id"]).version == 5


def test_a_key_is_remembered_as_long_as_its_conversation_exists(user, tables) -> None:
    first = create({"initial_user_msg": "hello"}, headers={"Idempotency-Key": "key-stop"})
    stopped = call_api(api_event("POST", f"{CONVERSATIONS}/{first.body['conversation_id']}/stop"))
    assert stopped.status == 200, stopped.body
    again = create({"initial_user_msg": "hello"}, headers={"Idempotency-Key": "key-stop"})
    assert (again.status, again.body) == (200, first.body)
    assert len(conversation_items(tables["conversations"])) == 1


def test_a_retry_inside_the_first_invocation_gets_the_first_answer(user, tables) -> None:
    """The retry runs while the first attempt is between its read and its write (it arrives
    through a hook on the first attempt's transaction): both answer 200 with one conversation,
    where an in-progress record answered the retry 409."""
    dynamodb = aws.client("dynamodb")
    body = CreateConversationRequest(initial_user_msg="hello")
    answers = []

    def retry_now(**_: Any) -> None:
        dynamodb.meta.events.unregister("before-call.dynamodb.TransactWriteItems", retry_now)
        answers.append(services.conversation_service().create("user-1", body, "key-race"))

    dynamodb.meta.events.register("before-call.dynamodb.TransactWriteItems", retry_now)
    try:
        answers.append(services.conversation_service().create("user-1", body, "key-race"))
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.TransactWriteItems", retry_now)
    assert len(answers) == 2 and answers[0] == answers[1]
    assert len(conversation_items(tables["conversations"])) == 1
    assert active_counter(tables["users"], "user-1") == 1


def test_a_retry_after_a_lost_answer_gets_the_first_answer(user, tables) -> None:
    """The transaction is applied but its answer never arrives (botocore gave up): a transient
    failure (dal/aws.py), so the slot policy writes again, finds the conversation this very write
    stored and answers it; a client's retry with the same key answers it too."""
    dynamodb = aws.client("dynamodb")
    lost: list[str] = []

    def lose_the_first_answer(**_: Any) -> None:
        if not lost:
            lost.append("TransactWriteItems")
            raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/")

    dynamodb.meta.events.register("after-call.dynamodb.TransactWriteItems", lose_the_first_answer)
    try:
        first = create({"initial_user_msg": "hello"}, headers={"Idempotency-Key": "key-lost"})
    finally:
        dynamodb.meta.events.unregister("after-call.dynamodb.TransactWriteItems", lose_the_first_answer)
    assert lost and first.status == 200, first.body
    written = [item["conversation_id"]["S"] for item in conversation_items(tables["conversations"])]
    assert written == [keyed_conversation_id("user-1", "key-lost")] == [first.body["conversation_id"]]
    assert active_counter(tables["users"], "user-1") == 1
    retry = create({"initial_user_msg": "hello"}, headers={"Idempotency-Key": "key-lost"})
    assert retry.status == 200, retry.body
    assert retry.body["conversation_id"] == written[0]
    assert len(conversation_items(tables["conversations"])) == 1


def _aws_calls(action: Callable[[], Any]) -> list[str]:
    counter = CallCounter().attach(aws.client("dynamodb"), aws.client("kms"), aws.client("s3"))
    try:
        action()
    finally:
        counter.detach(aws.client("dynamodb"), aws.client("kms"), aws.client("s3"))
    return [f"{call.service}:{call.operation}" for call in counter.calls]


def test_aws_calls_of_a_create_free_at_the_limit_and_replayed(user, tables) -> None:
    # Settings and the active count come in one read; at the limit the replacing transaction is
    # the first write (no refused insert first); a replay is that one read.
    assert _aws_calls(lambda: create({}, headers={"Idempotency-Key": "k1"})) == [
        "dynamodb:BatchGetItem",
        "dynamodb:TransactWriteItems",
    ]
    create({})
    create({})
    assert _aws_calls(lambda: create({})) == [
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "dynamodb:TransactWriteItems",
    ]
    assert _aws_calls(lambda: create({}, headers={"Idempotency-Key": "k1"})) == ["dynamodb:BatchGetItem"]


def test_a_refused_request_can_be_retried_with_the_same_key(stack, tables) -> None:
    refused = create({}, headers={"Idempotency-Key": "key-retry"})
    assert refused.body["msg_id"] == "CONFIGURATION$SETTINGS_NOT_FOUND"
    configure_user("user-1")
    assert create({}, headers={"Idempotency-Key": "key-retry"}).status == 200
    assert len(conversation_items(tables["conversations"])) == 1


def test_an_unusable_key_is_refused(user) -> None:
    response = create({}, headers={"Idempotency-Key": "k" * 256})
    assert (response.status, response.body["msg_id"]) == (400, "ERROR$INVALID_REQUEST")


def test_a_transaction_resent_after_its_answer_was_lost_is_not_a_second_conversation(user, tables) -> None:
    """botocore resends a TransactWriteItems whose answer timed out; AWS matches its
    ClientRequestToken, moto does not and refuses the Put: the create recognises its own item
    (ALL_OLD) and answers it, without a key too, instead of writing another under a fresh id."""
    dynamodb = aws.client("dynamodb")
    applied_elsewhere = boto3.client("dynamodb")

    def apply_first(params: dict[str, Any], **_: Any) -> None:
        dynamodb.meta.events.unregister("before-parameter-build.dynamodb.TransactWriteItems", apply_first)
        applied_elsewhere.transact_write_items(TransactItems=copy.deepcopy(params["TransactItems"]))

    dynamodb.meta.events.register("before-parameter-build.dynamodb.TransactWriteItems", apply_first)
    try:
        response = create({"initial_user_msg": "hello"})
    finally:
        dynamodb.meta.events.unregister("before-parameter-build.dynamodb.TransactWriteItems", apply_first)
    assert response.status == 200, response.body
    items = conversation_items(tables["conversations"])
    assert [item["conversation_id"]["S"] for item in items] == [response.body["conversation_id"]]
    assert active_counter(tables["users"], "user-1") == 1
