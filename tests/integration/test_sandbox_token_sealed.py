"""The sandbox token never reaches ECS or Step Functions in clear (issue 10): RunTask gets it
sealed for the task role, so ECS task descriptions (and CloudTrail's record of RunTask's
parameters) and the execution history hold only ciphertext."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.integration.conftest import WorkflowHarness
from tests.support.git_repositories import make_repository


def test_run_task_and_the_history_hold_only_the_sealed_token(workflow: WorkflowHarness, tmp_path: Path) -> None:
    make_repository(tmp_path / "repo", ("main",))
    assert workflow.api("POST", "/api/settings", {"llm_model": "m", "llm_api_key": "sk-live-123"})[0] == 200
    status, created = workflow.api("POST", "/api/conversations", {"repository": str(tmp_path / "repo")})
    assert status == 200, created
    conversation_id = created["conversation_id"]
    environment = workflow.sandbox_environment(conversation_id)
    assert "SANDBOX_TOKEN" not in environment
    token = workflow.open_sandbox_token(conversation_id)
    assert token.startswith(f"{conversation_id}.")
    secret = token.split(".", 1)[1]

    # The sealed token opens only with this conversation's context.
    kms = workflow.session.client("kms")
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(
            CiphertextBlob=base64.b64decode(environment["SANDBOX_TOKEN_CIPHERTEXT"]),
            EncryptionContext={"purpose": "sandbox-token", "conversation_id": "0" * 32},
        )

    status, context = workflow.sandbox("GET", "/sandbox/v1/context", token)
    assert status == 200, context
    ready = {"type": "ready", "agent_server_url": workflow.agent_server_url(conversation_id)}
    assert workflow.sandbox("POST", "/sandbox/v1/events", token, {**ready, "agent_conversation_id": "a"})[0] == 200
    workflow.wait_for(lambda: workflow.execution(conversation_id)["status"] == "SUCCEEDED", what="execution end")

    ecs = workflow.session.client("ecs")
    cluster = workflow.resources.attributes["SandboxCluster.Arn"]
    arns = ecs.list_tasks(cluster=cluster, startedBy=conversation_id)["taskArns"]
    described = json.dumps(ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"], default=str)
    history = json.dumps(workflow.history(conversation_id), default=str)
    for place, text in (("ECS task description (RunTask's overrides)", described), ("execution history", history)):
        assert "SANDBOX_TOKEN_CIPHERTEXT" in described
        assert secret not in text, f"the sandbox token is readable in the {place}"
