"""The real state machine executed by moto, each Lambda task running our real handler."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from conversation_service import services
from conversation_service.dal import aws
from moto import mock_aws

from devstack.lambda_runtime import LocalLambdaRuntime, apply_environment
from devstack.stream_pump import StreamPump
from devstack.template_resources import StackResources, provision
from tests.helpers import FakeLambdaContext, api_event

MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


@dataclass
class WorkflowHarness:
    resources: StackResources
    runtime: LocalLambdaRuntime
    pump: StreamPump
    session: boto3.Session

    def api(self, method: str, path: str, body: Any = None, user_id: str = "user-1") -> tuple[int, dict[str, Any]]:
        response = self.runtime.invoke("ApiFunction", api_event(method, path, body, user_id=user_id))
        return response["statusCode"], json.loads(response["body"])

    def sandbox(self, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        event = api_event(method, path, body, user_id=None, headers=headers)
        event["resource"] = "/sandbox/{proxy+}"
        response = self.runtime.invoke("SandboxApiFunction", event)
        return response["statusCode"], json.loads(response["body"])

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        status, body = self.api("GET", f"/api/conversations/{conversation_id}")
        assert status == 200, body
        return body

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump.pump_once()
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def sandbox_task(self, conversation_id: str) -> dict[str, Any] | None:
        ecs = self.session.client("ecs")
        cluster = self.resources.attributes["SandboxCluster.Arn"]
        arns = ecs.list_tasks(cluster=cluster, startedBy=conversation_id)["taskArns"]
        if not arns:
            return None
        task: dict[str, Any] = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"][0]
        return task

    def sandbox_environment(self, conversation_id: str) -> dict[str, str]:
        task = self.wait_for(lambda: self.sandbox_task(conversation_id), what="the sandbox task")
        overrides = task["overrides"]["containerOverrides"][0]["environment"]
        return {item["name"]: item["value"] for item in overrides}

    def execution(self, conversation_id: str) -> dict[str, Any]:
        sfn = self.session.client("stepfunctions")
        arn = self.resources.physical["ConversationWorkflow"].replace(":stateMachine:", ":execution:") + (
            f":{conversation_id}"
        )
        return dict(sfn.describe_execution(executionArn=arn))

    def history(self, conversation_id: str) -> list[dict[str, Any]]:
        sfn = self.session.client("stepfunctions")
        arn = self.execution(conversation_id)["executionArn"]
        return list(sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"])


def make_harness(monkeypatch: pytest.MonkeyPatch, parameters: dict[str, str] | None = None) -> WorkflowHarness:
    aws.client.cache_clear()
    session = boto3.Session(region_name="us-east-1")
    # A stack name of its own: a moto account another test left behind cannot collide with it.
    stack_name = f"it{uuid.uuid4().hex[:6]}"
    resources = provision(stack_name, {"SandboxHeartbeatSeconds": "30", **(parameters or {})}, session=session)
    environment = apply_environment(
        resources,
        {"ALLOW_LOCAL_REPOSITORIES": "true", "SANDBOX_API_URL": "http://127.0.0.1:9/sandbox"},
    )
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    services.reset()
    runtime = LocalLambdaRuntime(resources)
    runtime.install_into_moto()
    stream_arn = resources.attributes["ConversationsTable.StreamArn"]
    pump = StreamPump(stream_arn, runtime, "WorkflowStarterFunction", session)
    return WorkflowHarness(resources, runtime, pump, session)


@pytest.fixture
def workflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkflowHarness]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        yield make_harness(monkeypatch)
    aws.client.cache_clear()
    services.reset()


__all__ = ["FakeLambdaContext", "WorkflowHarness", "make_harness"]
