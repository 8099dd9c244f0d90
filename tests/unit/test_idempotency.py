"""Idempotency-Key: a retried create returns the first answer and creates nothing new."""

from __future__ import annotations

import time

import boto3

from tests.unit.support import configure_user, conversation_items, create


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


def test_a_key_is_remembered_for_24_hours(user, tables) -> None:
    before = int(time.time())
    create({}, headers={"Idempotency-Key": "key-ttl"})
    records = boto3.client("dynamodb").scan(TableName=tables["idempotency"])["Items"]
    assert len(records) == 1
    expires = int(records[0]["expiration"]["N"])
    assert before + 86400 <= expires <= int(time.time()) + 86400 + 5


def test_a_refused_request_can_be_retried_with_the_same_key(stack, tables) -> None:
    refused = create({}, headers={"Idempotency-Key": "key-retry"})
    assert refused.body["msg_id"] == "CONFIGURATION$SETTINGS_NOT_FOUND"
    configure_user("user-1")
    assert create({}, headers={"Idempotency-Key": "key-retry"}).status == 200
    assert len(conversation_items(tables["conversations"])) == 1


def test_an_unusable_key_is_refused(user) -> None:
    response = create({}, headers={"Idempotency-Key": "k" * 256})
    assert (response.status, response.body["msg_id"]) == (400, "ERROR$INVALID_REQUEST")
