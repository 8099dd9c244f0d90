"""Faults in the creation workflow, on the real ASL (moto's Step Functions engine) with the real
handlers: every case ends RUNNING or ERROR within its timeout, with no conversation left
STARTING, no sandbox task left running for a failed conversation, no concurrency slot leaked,
and no secret in the execution history (tests/reliability/workflow_support.assert_clean_end)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from conversation_service import services
from conversation_service.dal import aws
from moto import mock_aws

from tests.integration.conftest import MOTO_CONFIG, WorkflowHarness
from tests.reliability.faults import FaultInjector
from tests.reliability.workflow_support import (
    SANDBOX_PHASES,
    assert_clean_end,
    fast_harness,
    report,
    run_sandbox,
    sandbox_token,
    start,
)

SERVICES = ("dynamodb", "kms", "s3", "stepfunctions", "ecs")


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkflowHarness]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        yield fast_harness(monkeypatch)
    aws.client.cache_clear()
    services.reset()


@pytest.fixture
def faults(harness: WorkflowHarness) -> Iterator[FaultInjector]:
    injector = FaultInjector().attach(*(aws.client(name) for name in SERVICES))
    yield injector
    injector.detach()


# -- transient faults: botocore's retry absorbs them, the conversation starts -------------------
@pytest.mark.parametrize(
    ("service", "operation"),
    [
        ("stepfunctions", "StartExecution"),  # the outbox starter
        ("s3", "PutObject"),  # InitializeContext: the agent context
        ("ecs", "RunTask"),  # LaunchSandbox
        ("dynamodb", "UpdateItem"),  # every phase the workflow and the sandbox record
        ("kms", "Decrypt"),  # the sandbox API opening the user's secrets
        ("stepfunctions", "SendTaskSuccess"),  # the sandbox API answering the task token
    ],
)
def test_transient_timeouts_on_each_workflow_call_are_absorbed(
    harness: WorkflowHarness, faults: FaultInjector, tmp_path: Path, service: str, operation: str
) -> None:
    rule = faults.add(service, operation, "timeout", mode="transient", times=2)
    conversation_id = start(harness, tmp_path)
    run_sandbox(harness, sandbox_token(harness, conversation_id))
    assert_clean_end(harness, conversation_id, "RUNNING")
    assert rule.fired == 2


# -- persistent faults: the conversation ends in ERROR with a code that says why ---------------
def capacity_failure(model: Any, **_: Any) -> Any:
    if model.name != "RunTask":
        return None
    parsed = {
        "tasks": [],
        "failures": [
            {
                "arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/x",
                "reason": "Capacity is unavailable at this time",
            }
        ],
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }
    return AWSResponse("https://ecs.us-east-1.amazonaws.com/", 200, {}, None), parsed


def test_runtask_capacity_failures_are_sandbox_launch_failed(harness: WorkflowHarness, tmp_path: Path) -> None:
    aws.client("ecs").meta.events.register("before-call.ecs.RunTask", capacity_failure)
    try:
        conversation_id = start(harness, tmp_path)
        view = assert_clean_end(harness, conversation_id, "ERROR")
    finally:
        aws.client("ecs").meta.events.unregister("before-call.ecs.RunTask", capacity_failure)
    assert view["error_code"] == "SANDBOX_LAUNCH_FAILED"
    assert "Capacity is unavailable" in view["error_message"]


@pytest.mark.parametrize(
    ("service", "operation", "kind", "codes"),
    [
        ("s3", "PutObject", "5xx", {"INTERNAL"}),
        ("s3", "PutObject", "timeout", {"INTERNAL"}),
        ("ecs", "RunTask", "throttle", {"SANDBOX_LAUNCH_FAILED"}),
        ("ecs", "RunTask", "timeout", {"SANDBOX_LAUNCH_FAILED", "INTERNAL"}),
        ("stepfunctions", "StartExecution", "refused", {"INTERNAL"}),
    ],
)
def test_persistent_faults_end_in_error(
    harness: WorkflowHarness,
    faults: FaultInjector,
    tmp_path: Path,
    service: str,
    operation: str,
    kind: str,
    codes: set[str],
) -> None:
    code = "StateMachineDoesNotExist" if kind == "refused" else None
    faults.add(service, operation, kind, code=code)
    conversation_id = start(harness, tmp_path)
    if operation == "StartExecution":
        harness.wait_for(lambda: harness.conversation(conversation_id)["conversation_status"] == "ERROR", what="ERROR")
        view = harness.conversation(conversation_id)
        assert services.user_store().active_count("user-1") == 0
    else:
        view = assert_clean_end(harness, conversation_id, "ERROR")
    assert view["error_code"] in codes, view
    assert "Traceback" not in str(view)


@pytest.mark.parametrize(
    ("service", "operation"),
    [
        ("s3", "PutObject"),  # InitializeContext: the agent context
        ("dynamodb", "UpdateItem"),  # InitializeContext's phase, or MarkRunning
    ],
)
def test_a_transient_failure_past_botocores_retries_is_retried_by_the_state_machine(
    harness: WorkflowHarness, faults: FaultInjector, tmp_path: Path, service: str, operation: str
) -> None:
    """A step translates a transient AWS failure (throttling, 5xx, timeout) into RetryableError,
    the one error the state machine's Retry names: the step runs again and the conversation starts."""
    rule = faults.add(service, operation, "5xx", times=1)
    conversation_id = start(harness, tmp_path)
    run_sandbox(harness, sandbox_token(harness, conversation_id))
    assert_clean_end(harness, conversation_id, "RUNNING")
    assert rule.fired == 1


def test_a_throttled_workflow_start_is_redelivered_until_it_succeeds(
    harness: WorkflowHarness, faults: FaultInjector, tmp_path: Path
) -> None:
    rule = faults.add("stepfunctions", "StartExecution", "throttle", times=3)
    conversation_id = start(harness, tmp_path)
    run_sandbox(harness, sandbox_token(harness, conversation_id))
    assert_clean_end(harness, conversation_id, "RUNNING")
    assert rule.fired == 3


def test_record_failure_is_retried_until_it_records(
    harness: WorkflowHarness, faults: FaultInjector, tmp_path: Path
) -> None:
    """The launch fails, and the first two attempts of RecordFailure's transaction are throttled
    away (after botocore's retries): the state's own Retry (States.ALL) still records ERROR.

    The launch is refused outright (a 400), not throttled: a throttled RunTask is retried by
    LaunchSandbox's own Retry for up to a minute first, which is not what this test is about."""
    faults.add("ecs", "RunTask", "refused", code="InvalidParameterException")
    conversation_id = start(harness, tmp_path)
    faults.add("dynamodb", "TransactWriteItems", "throttle", times=2)
    view = assert_clean_end(harness, conversation_id, "ERROR")
    assert view["error_code"] == "SANDBOX_LAUNCH_FAILED"


# -- the sandbox crashes, fails or goes quiet ---------------------------------------------------
@pytest.mark.parametrize("phase", SANDBOX_PHASES)
def test_a_sandbox_that_crashes_in_a_phase_is_a_phase_timeout_naming_it(
    harness: WorkflowHarness, tmp_path: Path, phase: str
) -> None:
    conversation_id = start(harness, tmp_path)
    run_sandbox(harness, sandbox_token(harness, conversation_id), until=phase)
    view = assert_clean_end(harness, conversation_id, "ERROR")
    assert view["error_code"] == "PHASE_TIMEOUT"
    assert phase in view["error_message"]


@pytest.mark.parametrize("phase", SANDBOX_PHASES)
def test_a_sandbox_that_reports_failure_in_a_phase_ends_in_error_with_its_code(
    harness: WorkflowHarness, tmp_path: Path, phase: str
) -> None:
    conversation_id = start(harness, tmp_path)
    run_sandbox(harness, sandbox_token(harness, conversation_id), fail=phase)
    view = assert_clean_end(harness, conversation_id, "ERROR")
    assert view["error_code"] != "PHASE_TIMEOUT" and view["error_message"], view


def test_a_sandbox_that_stops_heartbeating_is_a_phase_timeout(harness: WorkflowHarness, tmp_path: Path) -> None:
    conversation_id = start(harness, tmp_path)
    token = sandbox_token(harness, conversation_id)
    run_sandbox(harness, token, until="STATUS$RUNNING_SETUP_SCRIPT")
    for _ in range(3):  # alive for a while (one heartbeat a second, the limit is 3 s) ...
        assert report(harness, token, {"type": "heartbeat"}) == 200
        time.sleep(1)
    view = assert_clean_end(harness, conversation_id, "ERROR")  # ... then silent
    assert view["error_code"] == "PHASE_TIMEOUT"
    assert "STATUS$RUNNING_SETUP_SCRIPT" in view["error_message"]
