"""One translation from AWS failures to domain errors (dal/aws.py), one exceptions module
(models/errors.py), and a state machine that retries exactly the errors the code raises.

No AWS emulation: botocore's Stubber answers the DAL's calls with the errors AWS sends."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber
from conversation_service.dal import aws
from conversation_service.dal.active_slots import ActiveSlots
from conversation_service.dal.conversation_teardown import ConversationTeardown
from conversation_service.dal.sandboxes import SandboxFleet
from conversation_service.models import errors
from conversation_service.models.domain import Conversation, ConversationStatus
from conversation_service.models.errors import (
    ActiveLimitReached,
    ConversationChanged,
    ConversationIdTaken,
    ConversationNoLongerActive,
    RetryableError,
    SandboxLaunchThrottled,
    WriteContention,
)

from tests.support.in_memory import InMemoryService, unit_config

ROOT = Path(__file__).resolve().parents[2]
ASL = ROOT / "statemachine" / "create_conversation.asl.json"
LAYER = ROOT / "layers" / "common" / "conversation_service"


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Stubber]]:
    """`stub(service)`: the DAL's client for that service, answered by a Stubber."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    aws.client.cache_clear()
    stubbers: list[Stubber] = []

    def stub(service: str) -> Stubber:
        stubber = Stubber(aws.client(service))
        stubber.activate()
        stubbers.append(stubber)
        return stubber

    yield stub
    for stubber in stubbers:
        stubber.deactivate()
    aws.client.cache_clear()


def _conversation(conversation_id: str = "c1", status: ConversationStatus = ConversationStatus.RUNNING) -> Conversation:
    return Conversation(
        conversation_id=conversation_id,
        user_id="user-1",
        conversation_status=status,
        runtime_status="STATUS$READY",
        title="t",
        trigger="api",
        created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
        last_active_at=1,
        agent="CodeActAgent",
        max_iterations=100,
        confirmation_mode=False,
        llm_model="m",
        sandbox_image="image",
        runtime="fargate",
    )


def _cancelled(*reasons: dict[str, Any]) -> dict[str, Any]:
    """A TransactionCanceledException as DynamoDB sends it: a reason per item, in order."""
    return {
        "service_error_code": "TransactionCanceledException",
        "service_message": "Transaction cancelled",
        "modeled_fields": {"CancellationReasons": list(reasons)},
    }


# -- the translation, by code ---------------------------------------------------------------------
def test_a_cancelled_transaction_raises_what_its_refused_item_means(stubbed: Callable[[str], Stubber]) -> None:
    slots = ActiveSlots("conversations", "users")
    dynamodb = stubbed("dynamodb")
    none, refused = {"Code": "None"}, {"Code": "ConditionalCheckFailed"}
    taken = {**refused, "Item": _item(_conversation("c-new"))}
    at_limit = {**refused, "Item": {"active_count": {"N": "3"}}}
    for reasons in ([taken, none], [none, at_limit], [none, {"Code": "TransactionConflict"}]):
        dynamodb.add_client_error("transact_write_items", **_cancelled(*reasons))
    dynamodb.add_client_error("transact_write_items", "ThrottlingException", http_status_code=400)

    with pytest.raises(ConversationIdTaken) as id_taken:
        slots.insert_within_limit(_conversation("c-new"), 3)
    assert id_taken.value.existing is not None and id_taken.value.existing.conversation_id == "c-new"
    with pytest.raises(ActiveLimitReached) as limit:
        slots.insert_within_limit(_conversation("c-new"), 3)
    assert limit.value.current == 3
    with pytest.raises(WriteContention):  # cancelled for a conflict, not a condition
        slots.insert_within_limit(_conversation("c-new"), 3)
    with pytest.raises(WriteContention):
        slots.insert_within_limit(_conversation("c-new"), 3)
    dynamodb.assert_no_pending_responses()


def test_the_same_refusal_means_what_the_write_says_it_means(stubbed: Callable[[str], Stubber]) -> None:
    """One code, ConditionalCheckFailed, three meanings: chosen by the item, not by its text."""
    store = ConversationTeardown("conversations", "users")
    dynamodb = stubbed("dynamodb")
    refused_first = _cancelled({"Code": "ConditionalCheckFailed"}, {"Code": "None"})
    refused_second = _cancelled({"Code": "None"}, {"Code": "ConditionalCheckFailed"})
    dynamodb.add_client_error("transact_write_items", **refused_first)  # reactivate: changed
    dynamodb.add_client_error("transact_write_items", **refused_second)  # its victim: closed
    dynamodb.add_client_error("transact_write_items", **refused_first)  # deactivate: already closed
    dynamodb.add_client_error("delete_item", "ConditionalCheckFailedException", http_status_code=400)
    dynamodb.add_client_error("update_item", "ConditionalCheckFailedException", http_status_code=400)
    dynamodb.add_client_error("update_item", "AccessDeniedException", http_status_code=400)

    stopped, victim = _conversation("c1", ConversationStatus.STOPPED), _conversation("c2")
    with pytest.raises(ConversationChanged):
        store.reactivate_within_limit(stopped, 3, at="now", last_active_at=2)
    with pytest.raises(ConversationNoLongerActive):
        store.reactivate_replacing(stopped, victim, reason="r", at="now", last_active_at=2)
    assert store.deactivate("c2", "user-1", ConversationStatus.STOPPED, at="now") is False
    with pytest.raises(ConversationChanged):
        store.delete(stopped)
    assert store.request_teardown(stopped, at="now") is False
    with pytest.raises(ClientError):  # not transient, no meaning given: surfaces unchanged
        store.request_teardown(stopped, at="now")


@pytest.mark.parametrize(
    "failure",
    [
        ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "GetItem"),
        ClientError({"Error": {"Code": "Whatever"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetItem"),
        EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
    ],
)
def test_transient_failures_become_write_contention_and_retryable_error_in_a_step(failure: Exception) -> None:
    assert isinstance(aws.domain_error(failure), WriteContention)
    with pytest.raises(RetryableError), aws.aws_failures_translated():
        raise failure


def test_a_failure_that_is_not_transient_passes_unchanged() -> None:
    denied = ClientError({"Error": {"Code": "AccessDeniedException"}}, "GetItem")
    assert aws.domain_error(denied) is None
    with pytest.raises(ClientError), aws.aws_failures_translated():
        raise denied


# -- one exceptions module ------------------------------------------------------------------------
def test_every_exception_class_of_the_layer_is_in_models_errors() -> None:
    """What a store, an adapter or a rule raises is a class of models/errors.py (or a library's
    own, unchanged): one module to read to know what can go wrong."""
    import conversation_service

    elsewhere = [
        f"{module.__name__}.{name}"
        for info in pkgutil.walk_packages(conversation_service.__path__, "conversation_service.")
        for module in [importlib.import_module(info.name)]
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == module.__name__
    ]
    assert elsewhere and all(name.startswith("conversation_service.models.errors.") for name in elsewhere), [
        name for name in elsewhere if not name.startswith("conversation_service.models.errors.")
    ]


def test_no_error_is_told_apart_by_its_class_name_or_its_text() -> None:
    classifying = re.compile(r"type\([^)]*\)\.__name__\s*(==|in)|__name__\s*==|in str\(error\)|in str\(exc")
    offenders = [
        f"{path.relative_to(LAYER)}:{number}"
        for path in LAYER.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if classifying.search(line)
    ]
    assert offenders == []


# -- the state machine retries exactly what the code raises ----------------------------------------
def _retried_names() -> dict[str, set[str]]:
    states = json.loads(re.sub(r"\$\{\w+\}", "1", ASL.read_text()))["States"]
    named: dict[str, set[str]] = {}
    for state_name, state in states.items():
        for rule in state.get("Retry", []):
            for name in rule["ErrorEquals"]:
                if not name.startswith(("States.", "Lambda.")):  # Step Functions' and Lambda's own
                    named.setdefault(name, set()).add(state_name)
    return named


def _throttled_step() -> None:
    """A workflow step (InitializeContext) whose store write AWS throttles past botocore's retries."""
    memory = InMemoryService()
    memory.configure_user()
    conversation_id = memory.create()

    def throttled(_: str) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException"}}, "UpdateItem")

    memory.conversations.before_write = throttled
    memory.workflow().initialize_context(conversation_id)


def _throttled_launch(stubbed: Callable[[str], Stubber]) -> None:
    stubbed("ecs").add_client_error("run_task", "ThrottlingException", http_status_code=400)
    config = unit_config(sandbox_subnet_ids=["subnet-1"], sandbox_security_group_ids=["sg-1"])
    SandboxFleet(config).launch("c1", "user-1", {})


# How the code raises each retryable error: a name the ASL retries needs an entry here.
RAISED_BY: dict[type[Exception], Callable[[Callable[[str], Stubber]], None]] = {
    RetryableError: lambda _: _throttled_step(),
    SandboxLaunchThrottled: _throttled_launch,
}


def test_every_retried_name_is_a_retryable_class_of_the_exceptions_module_and_back() -> None:
    named = _retried_names()
    retryable = {name for name, error in errors.WORKFLOW_STEP_ERRORS.items() if error.retryable}
    for name in named:
        assert isinstance(getattr(errors, name, None), type), f"{name} is not a class of models/errors.py"
    assert set(named) == retryable == {error.__name__ for error in RAISED_BY}


@pytest.mark.parametrize("error", list(RAISED_BY), ids=lambda error: error.__name__)
def test_each_retried_error_is_raised_by_the_code_for_a_transient_failure(
    error: type[Exception], stubbed: Callable[[str], Stubber]
) -> None:
    with pytest.raises(error) as raised:
        RAISED_BY[error](stubbed)
    assert type(raised.value) is error  # Lambda reports the exact class name: a subclass would not match


def _item(conversation: Conversation) -> dict[str, Any]:
    return aws.to_item(conversation.model_dump(mode="json", exclude_none=True))
