"""Every way the creation workflow can fail ends in ERROR with a typed code, the slot freed,
the sandbox task stopped, and no secret in the execution history."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conversation_service import services
from conversation_service.dal import aws
from conversation_service.models.domain import ConversationStatus
from moto import mock_aws

from tests.integration.conftest import MOTO_CONFIG, WorkflowHarness, make_harness
from tests.support.git_repositories import make_repository

LLM_KEY = "sk-integration-secret-7f3a"
GIT_TOKEN = "ghp_integration_token_91ac"


@pytest.fixture
def fast_workflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkflowHarness]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        yield make_harness(monkeypatch, {"SandboxHeartbeatSeconds": "2", "SandboxStartTimeoutSeconds": "4"})
    aws.client.cache_clear()
    services.reset()


def start(harness: WorkflowHarness, tmp_path: Path, user_id: str = "user-1") -> str:
    make_repository(tmp_path / "repo")
    settings = {"llm_model": "m", "llm_api_key": LLM_KEY, "provider_tokens": {"github": GIT_TOKEN}}
    assert harness.api("POST", "/api/settings", settings, user_id=user_id)[0] == 200
    status, body = harness.api("POST", "/api/conversations", {"repository": str(tmp_path / "repo")}, user_id=user_id)
    assert status == 200, body
    return str(body["conversation_id"])


def wait_for_status(harness: WorkflowHarness, conversation_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    return dict(
        harness.wait_for(
            lambda: (view := harness.conversation(conversation_id))["conversation_status"] == status and view,
            timeout=timeout,
            what=status,
        )
    )


def active_count(harness: WorkflowHarness, user_id: str = "user-1") -> int:
    return services.user_store().active_count(user_id)


def assert_clean_end(harness: WorkflowHarness, conversation_id: str) -> None:
    harness.wait_for(lambda: harness.execution(conversation_id)["status"] == "SUCCEEDED", what="execution end")
    states = [event.get("stateEnteredEventDetails", {}).get("name") for event in harness.history(conversation_id)]
    assert "RecordFailure" in states and "ConversationEndedInError" in states
    history = str(harness.history(conversation_id))
    assert LLM_KEY not in history and GIT_TOKEN not in history
    assert active_count(harness) == 0
    task = harness.sandbox_task(conversation_id)
    if task is not None:
        assert task["desiredStatus"] == "STOPPED"


def test_setup_script_failure_is_reported_with_exit_code(workflow: WorkflowHarness, tmp_path: Path) -> None:
    conversation_id = start(workflow, tmp_path)
    token = workflow.open_sandbox_token(conversation_id)
    assert workflow.sandbox("GET", "/sandbox/v1/context", token)[0] == 200
    failure = {
        "type": "failed",
        "error_code": "SETUP_SCRIPT_FAILED",
        "message": ".openhands/setup.sh exited with 3",
        "details": {"exit_code": 3, "output_tail": "x" * 10_000},
    }
    assert workflow.sandbox("POST", "/sandbox/v1/events", token, failure)[0] == 200
    view = wait_for_status(workflow, conversation_id, "ERROR")
    assert view["error_code"] == "SETUP_SCRIPT_FAILED"
    assert view["error_details"]["exit_code"] == 3
    assert len(view["error_details"]["output_tail"]) == 4096
    assert view["runtime_status"] == "STATUS$ERROR"
    assert_clean_end(workflow, conversation_id)
    # The sandbox is told to stop: its token no longer reports anything.
    assert workflow.sandbox("POST", "/sandbox/v1/events", token, {"type": "heartbeat"})[0] == 409


def test_silent_sandbox_is_a_phase_timeout(fast_workflow: WorkflowHarness, tmp_path: Path) -> None:
    conversation_id = start(fast_workflow, tmp_path)
    view = wait_for_status(fast_workflow, conversation_id, "ERROR", timeout=30)
    assert view["error_code"] == "PHASE_TIMEOUT"
    assert "STATUS$STARTING_RUNTIME" in view["error_message"]
    assert_clean_end(fast_workflow, conversation_id)


def test_sandbox_that_never_gets_ready_times_out_naming_its_phase(
    fast_workflow: WorkflowHarness, tmp_path: Path
) -> None:
    conversation_id = start(fast_workflow, tmp_path)
    token = fast_workflow.open_sandbox_token(conversation_id)
    phase = {"type": "phase", "phase": "STATUS$RUNNING_SETUP_SCRIPT"}
    assert fast_workflow.sandbox("POST", "/sandbox/v1/events", token, phase)[0] == 200
    deadline = time.monotonic() + 30
    while fast_workflow.conversation(conversation_id)["conversation_status"] == "STARTING":
        assert time.monotonic() < deadline
        fast_workflow.sandbox("POST", "/sandbox/v1/events", token, {"type": "heartbeat"})
        time.sleep(0.5)
    view = fast_workflow.conversation(conversation_id)
    assert view["error_code"] == "PHASE_TIMEOUT"
    assert "STATUS$RUNNING_SETUP_SCRIPT" in view["error_message"]
    assert_clean_end(fast_workflow, conversation_id)


def test_ecs_refusing_the_task_is_sandbox_launch_failed(
    workflow: WorkflowHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_TASK_DEFINITION_ARN", "arn:aws:ecs:us-east-1:123456789012:task-definition/nope:1")
    services.reset()
    conversation_id = start(workflow, tmp_path)
    view = wait_for_status(workflow, conversation_id, "ERROR")
    assert view["error_code"] == "SANDBOX_LAUNCH_FAILED"
    assert_clean_end(workflow, conversation_id)


def test_an_internal_failure_is_internal_and_leaks_nothing(workflow: WorkflowHarness, tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = workflow.resources.physical["ContextBucket"]
    s3.delete_bucket(Bucket=bucket)
    conversation_id = start(workflow, tmp_path)
    view = wait_for_status(workflow, conversation_id, "ERROR")
    assert view["error_code"] == "INTERNAL"
    assert bucket not in view["error_message"] and "Traceback" not in str(view)
    assert_clean_end(workflow, conversation_id)


def test_a_conversation_closed_while_starting_stops_its_sandbox(workflow: WorkflowHarness, tmp_path: Path) -> None:
    conversation_id = start(workflow, tmp_path)
    token = workflow.open_sandbox_token(conversation_id)
    from conversation_service.logic.clock import now_iso

    assert services.conversation_store().deactivate(
        conversation_id, "user-1", ConversationStatus.STOPPED, at=now_iso(), reason="test"
    )
    assert workflow.sandbox("GET", "/sandbox/v1/context", token)[0] == 409
    ready = {"type": "ready", "agent_server_url": "http://127.0.0.1:1", "agent_conversation_id": "x"}
    assert workflow.sandbox("POST", "/sandbox/v1/events", token, ready)[0] == 409
    assert workflow.conversation(conversation_id)["conversation_status"] == "STOPPED"
    assert active_count(workflow) == 0


def test_sandbox_tokens_open_only_their_own_conversation(workflow: WorkflowHarness, tmp_path: Path) -> None:
    first = start(workflow, tmp_path / "a")
    second = start(workflow, tmp_path / "b", user_id="user-2")
    first_token = workflow.open_sandbox_token(first)
    second_token = workflow.open_sandbox_token(second)
    forged = f"{second}.{first_token.split('.', 1)[1]}"
    assert workflow.sandbox("GET", "/sandbox/v1/context", forged)[0] == 401
    assert workflow.sandbox("GET", "/sandbox/v1/context", None)[0] == 401
    assert workflow.sandbox("GET", "/sandbox/v1/context", "not-a-token")[0] == 401
    status, context = workflow.sandbox("GET", "/sandbox/v1/context", second_token)
    assert status == 200 and context["conversation_id"] == second
    unknown_phase = {"type": "phase", "phase": "STATUS$NOPE"}
    assert workflow.sandbox("POST", "/sandbox/v1/events", first_token, unknown_phase)[0] == 400


def test_a_step_given_bad_input_ends_in_error_naming_the_field(workflow: WorkflowHarness, tmp_path: Path) -> None:
    """MarkRunning handed a readiness report without the agent's conversation id: its typed
    InvalidWorkflowInput goes through the Catch to RecordFailure, which records the reason."""
    conversation_id = start(workflow, tmp_path)
    task_token = workflow.wait_for(
        lambda: (item := services.conversation_store().get(conversation_id, consistent=True)) and item.task_token,
        what="LaunchSandbox's task token",
    )
    # moto takes a task token's answer only once the launching Lambda has returned.
    workflow.wait_for(
        lambda: any(event["type"] == "TaskSubmitted" for event in workflow.history(conversation_id)),
        what="LaunchSandbox submitted",
    )
    workflow.session.client("stepfunctions").send_task_success(
        taskToken=task_token, output=json.dumps({"agent_server_url": "http://127.0.0.1:8000"})
    )
    view = wait_for_status(workflow, conversation_id, "ERROR")
    assert view["error_code"] == "INTERNAL"
    assert "MarkRunning got invalid input: sandbox.agent_conversation_id: Field required" in view["error_message"]
    failed = [e for e in workflow.history(conversation_id) if e["type"] == "TaskFailed"]
    assert failed and failed[0]["taskFailedEventDetails"]["error"] == "InvalidWorkflowInput"
    assert_clean_end(workflow, conversation_id)
