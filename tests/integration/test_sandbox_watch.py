"""A sandbox task that stops by itself ends its conversation instead of leaving it RUNNING."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from conversation_service import services

from tests.integration.conftest import WorkflowHarness
from tests.support.git_repositories import make_repository


def _create(workflow: WorkflowHarness, tmp_path: Path) -> tuple[str, str, str]:
    make_repository(tmp_path / "repo")
    assert workflow.api("POST", "/api/settings", {"llm_model": "m", "llm_api_key": "k"})[0] == 200
    status, created = workflow.api("POST", "/api/conversations", {"repository": str(tmp_path / "repo")})
    assert status == 200, created
    conversation_id = created["conversation_id"]
    token = workflow.open_sandbox_token(conversation_id)
    task = workflow.sandbox_task(conversation_id)
    assert task is not None
    return conversation_id, token, str(task["taskArn"])


def _task_stopped(workflow: WorkflowHarness, conversation_id: str, task_arn: str, exit_code: int = 137) -> Any:
    event = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "source": "aws.ecs",
        "detail-type": "ECS Task State Change",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [task_arn],
        "detail": {
            "clusterArn": workflow.resources.attributes["SandboxCluster.Arn"],
            "taskArn": task_arn,
            "startedBy": conversation_id,
            "lastStatus": "STOPPED",
            "desiredStatus": "STOPPED",
            "stopCode": "EssentialContainerExited",
            "stoppedReason": "Essential container in task exited",
            "containers": [{"name": "sandbox", "exitCode": exit_code}],
        },
    }
    return workflow.runtime.invoke("SandboxWatchFunction", event)


def _view_when(workflow: WorkflowHarness, conversation_id: str, status: str) -> dict[str, Any]:
    return dict(
        workflow.wait_for(
            lambda: (view := workflow.conversation(conversation_id))["conversation_status"] == status and view,
            what=status,
        )
    )


def test_a_running_conversation_whose_sandbox_dies_is_an_error(workflow: WorkflowHarness, tmp_path: Path) -> None:
    conversation_id, token, task_arn = _create(workflow, tmp_path)
    ready = {"type": "ready", "agent_server_url": "http://127.0.0.1:1", "agent_conversation_id": "a"}
    assert workflow.sandbox("POST", "/sandbox/v1/events", token, ready)[0] == 200
    _view_when(workflow, conversation_id, "RUNNING")
    assert _task_stopped(workflow, conversation_id, task_arn) == {"outcome": "closed"}
    view = workflow.conversation(conversation_id)
    assert view["conversation_status"] == "ERROR"
    assert view["error_code"] == "RUNTIME_UNHEALTHY"
    assert "exit code 137" in view["error_message"]
    assert services.user_store().active_count("user-1") == 0


def test_a_sandbox_dying_while_starting_fails_the_workflow_at_once(workflow: WorkflowHarness, tmp_path: Path) -> None:
    conversation_id, _, task_arn = _create(workflow, tmp_path)
    assert _task_stopped(workflow, conversation_id, task_arn, exit_code=1) == {"outcome": "workflow-failed"}
    view = _view_when(workflow, conversation_id, "ERROR")
    assert view["error_code"] == "RUNTIME_UNHEALTHY"
    assert services.user_store().active_count("user-1") == 0


def test_stops_we_asked_for_and_foreign_tasks_are_ignored(workflow: WorkflowHarness, tmp_path: Path) -> None:
    conversation_id, _, task_arn = _create(workflow, tmp_path)
    assert _task_stopped(workflow, conversation_id, task_arn.replace("/", "/x", 1))["outcome"] == "ignored"
    assert workflow.api("POST", f"/api/conversations/{conversation_id}/stop")[0] == 200
    assert _task_stopped(workflow, conversation_id, task_arn)["outcome"] == "ignored"
    assert workflow.conversation(conversation_id)["conversation_status"] == "STOPPED"
    assert _task_stopped(workflow, "not/an id", task_arn)["outcome"] == "ignored"
