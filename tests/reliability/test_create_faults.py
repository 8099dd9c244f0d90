"""Faults on every AWS call of the create path: the client is told the truth.

For each call (settings read, token decrypt, the transaction, the at-limit victim query and
replacing transaction) and each fault (throttling, 5xx, timeout
after botocore's retries; a timeout that botocore's retry absorbs), a create with an
Idempotency-Key either succeeds, or answers an error and then: nothing was created, the user's
counter matches the items, and the same request with the same key, once AWS is healthy again,
creates exactly one conversation (or returns the first result)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from conversation_service.dal import aws

from tests.reliability.conftest import ApiStack
from tests.reliability.faults import FaultInjector

BODY = {"repository": "owner/repo", "selected_branch": "develop", "initial_user_msg": "fix the build"}
PERSISTENT = ["throttle", "5xx", "timeout"]
CREATE_PATH = [
    ("dynamodb", "BatchGetItem", 0, False),  # the user's settings and active count (and the keyed id)
    ("kms", "Decrypt", 0, False),  # the user's github token
    ("dynamodb", "TransactWriteItems", 0, False),  # the conversation and the slot
    ("dynamodb", "Query", 0, True),  # at the limit: the least recently active conversation
    ("dynamodb", "TransactWriteItems", 0, True),  # at the limit: new conversation + victim closed
]


@pytest.fixture
def faults(api_stack: ApiStack) -> Iterator[FaultInjector]:
    injector = FaultInjector().attach(aws.client("dynamodb"), aws.client("kms"), aws.client("s3"))
    yield injector
    injector.detach()


def create(api_stack: ApiStack, key: str, user_id: str = "user-1"):
    return api_stack.api("POST", "/api/conversations", BODY, user_id=user_id, headers={"Idempotency-Key": key})


def conversation_ids(api_stack: ApiStack, user_id: str = "user-1") -> set[str]:
    return {item["conversation_id"]["S"] for item in api_stack.items() if item["user_id"]["S"] == user_id}


def fill_to_limit(api_stack: ApiStack) -> None:
    for _ in range(3):
        assert api_stack.api("POST", "/api/conversations", BODY).status == 200


@pytest.mark.parametrize("kind", PERSISTENT)
@pytest.mark.parametrize(("service", "operation", "skip", "at_limit"), CREATE_PATH)
def test_a_failed_call_leaves_nothing_behind_and_the_retry_is_safe(
    api_stack: ApiStack, faults: FaultInjector, service: str, operation: str, skip: int, at_limit: bool, kind: str
) -> None:
    api_stack.configure_user()
    if at_limit:
        fill_to_limit(api_stack)
    before = conversation_ids(api_stack)
    key = uuid.uuid4().hex
    rule = faults.add(service, operation, kind, skip=skip)
    first = create(api_stack, key)
    assert rule.fired, f"the fault on {service}:{operation} was never reached"
    faults.clear()
    api_stack.assert_counter_matches_items()
    after_first = conversation_ids(api_stack)
    if first.status == 200:
        assert after_first - before == {first.body["conversation_id"]}
    else:
        assert first.status in (500, 503), first.body
        assert first.body["status"] == "error" and "Traceback" not in json.dumps(first.body)
        assert after_first == before, "an error answer must mean nothing was created"
    retry = create(api_stack, key)
    assert retry.status == 200, retry.body
    if first.status == 200:
        assert retry.body == first.body, "the same key returns the first result"
    created = conversation_ids(api_stack) - before
    assert created == {retry.body["conversation_id"]}, "exactly one conversation for one key"
    api_stack.assert_counter_matches_items()
    assert api_stack.active_counter() <= 3


@pytest.mark.parametrize(("service", "operation", "skip", "at_limit"), CREATE_PATH)
def test_a_timeout_absorbed_by_botocores_retry_is_invisible(
    api_stack: ApiStack, faults: FaultInjector, service: str, operation: str, skip: int, at_limit: bool
) -> None:
    api_stack.configure_user()
    if at_limit:
        fill_to_limit(api_stack)
    before = conversation_ids(api_stack)
    faults.add(service, operation, "timeout", mode="transient", times=1, skip=skip)
    answer = create(api_stack, uuid.uuid4().hex)
    assert answer.status == 200, answer.body
    assert conversation_ids(api_stack) - before == {answer.body["conversation_id"]}
    api_stack.assert_counter_matches_items()


def test_a_retried_transaction_carries_the_same_client_request_token(
    api_stack: ApiStack, faults: FaultInjector
) -> None:
    """Why a TransactWriteItems retried by botocore after a lost answer cannot apply twice on AWS:
    botocore fills ClientRequestToken once per call and resends it, and DynamoDB treats a repeat
    within 10 minutes as the same transaction. (moto ignores the token, so the lost-answer case
    itself is not reproducible here; this checks the half that is ours.)"""
    api_stack.configure_user()
    faults.add("dynamodb", "TransactWriteItems", "timeout", mode="transient", times=1)
    assert api_stack.api("POST", "/api/conversations", BODY).status == 200
    sent = [json.loads(body) for body in faults.bodies["dynamodb:TransactWriteItems"]]
    assert len(sent) == 2
    assert sent[0].get("ClientRequestToken"), "botocore must fill the idempotency token"
    assert sent[0]["ClientRequestToken"] == sent[1]["ClientRequestToken"]
