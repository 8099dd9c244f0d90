"""Driving the warm pool through the real handlers: the workflow harness of tests/integration
(moto's Step Functions engine) plus the pool's side of a sandbox, scripted."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from conversation_service import services

from devstack.task_credentials import open_sealed_pool_credential
from tests.integration.conftest import WorkflowHarness, make_harness
from tests.support.api_gateway import api_event

_clients: dict[tuple[int, str], Any] = {}


def client(harness: WorkflowHarness, service: str) -> Any:
    """One client per harness and service (making one costs more than the calls a test makes)."""
    key = (id(harness.session), service)
    if key not in _clients:
        _clients[key] = harness.session.client(service)
    return _clients[key]


def pool_harness(monkeypatch: pytest.MonkeyPatch, target: int = 2, **parameters: str) -> WorkflowHarness:
    """A stack with `PoolTargetIdle` = target. Nudges are off (the tests reconcile when they mean to),
    so nothing runs in a background thread against in-process moto."""
    harness = make_harness(monkeypatch, {"PoolTargetIdle": str(target), **parameters})
    _clients.clear()
    monkeypatch.setenv("POOL_RECONCILER_FUNCTION", "")
    services.reset()
    return harness


def pool_call(
    harness: WorkflowHarness,
    method: str,
    path: str,
    credential: str | None,
    body: Any = None,
    query: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """A request of a pool sandbox, routed as API Gateway routes /sandbox/v1/pool/{proxy+}."""
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    event = api_event(method, path, body, user_id=None, headers=headers, query=query)
    event["resource"] = "/sandbox/v1/pool/{proxy+}"
    response = harness.runtime.invoke("SandboxPoolFunction", event)
    return response["statusCode"], json.loads(response["body"])


def reconcile(harness: WorkflowHarness) -> dict[str, Any]:
    result: dict[str, Any] = harness.runtime.invoke("PoolReconcilerFunction", {})
    return result


def pool_task(harness: WorkflowHarness, sandbox_id: str) -> dict[str, Any]:
    ecs = client(harness, "ecs")
    cluster = harness.resources.attributes["SandboxCluster.Arn"]
    arns = ecs.list_tasks(cluster=cluster, startedBy=sandbox_id)["taskArns"]
    assert len(arns) == 1, arns
    task: dict[str, Any] = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"][0]
    return task


def task_environment(task: dict[str, Any]) -> dict[str, str]:
    overrides = task["overrides"]["containerOverrides"][0]["environment"]
    return {item["name"]: item["value"] for item in overrides}


def boot(harness: WorkflowHarness, sandbox_id: str) -> str:
    """What a pool sandbox does once its agent-server answers: report idle. Returns its credential."""
    environment = task_environment(pool_task(harness, sandbox_id))
    assert "SANDBOX_POOL_TOKEN" not in environment  # sealed for the task role, as the sandbox token
    credential = open_sealed_pool_credential(client(harness, "kms"), environment)
    status, body = pool_call(harness, "POST", "/sandbox/v1/pool/idle", credential, {"type": "idle", "boot_seconds": 1})
    assert status == 200, body
    return credential


def fill(harness: WorkflowHarness) -> dict[str, str]:
    """Reconcile, then boot every sandbox it launched: sandbox id -> credential."""
    launched = reconcile(harness)["launched"]
    return {sandbox_id: boot(harness, sandbox_id) for sandbox_id in launched}


def pool_items(harness: WorkflowHarness) -> list[dict[str, Any]]:
    from conversation_service.dal.aws import from_item

    dynamodb = client(harness, "dynamodb")
    table = harness.resources.physical["SandboxPoolTable"]
    return [from_item(item) for item in dynamodb.scan(TableName=table)["Items"]]


def task_stopped_event(
    harness: WorkflowHarness, task: dict[str, Any], reason: str = "Essential container exited"
) -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "source": "aws.ecs",
        "detail-type": "ECS Task State Change",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [task["taskArn"]],
        "detail": {
            "clusterArn": harness.resources.attributes["SandboxCluster.Arn"],
            "taskArn": task["taskArn"],
            "startedBy": task.get("startedBy"),
            "lastStatus": "STOPPED",
            "stoppedReason": reason,
            "containers": [{"exitCode": 137}],
        },
    }
