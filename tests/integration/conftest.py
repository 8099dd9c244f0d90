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
from devstack.task_credentials import open_sealed_sandbox_token
from devstack.template_resources import StackResources, provision
from tests.support.api_gateway import FakeLambdaContext, api_event

MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


class ClientReusingSession(boto3.Session):
    """A session that makes each service's default client once. Making a client costs ~30 ms of
    CPU (more than most calls to moto), and provisioning, the stream pump and the waits' polling
    would otherwise make one per call: clients are thread-safe, moto's backends hold the state."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clients: dict[str, Any] = {}

    def client(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return super().client(service_name, *args, **kwargs)
        if service_name not in self._clients:
            self._clients[service_name] = super().client(service_name)
        return self._clients[service_name]


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

    def open_sandbox_token(self, conversation_id: str) -> str:
        """What the task's bootstrap does with its task role: KMS Decrypt of the sealed token."""
        task = self.wait_for(lambda: self.sandbox_task(conversation_id), what="the sandbox task")
        environment = task["overrides"]["containerOverrides"][0]["environment"]
        return open_sealed_sandbox_token(self.session.client("kms"), environment, conversation_id)

    def open_assigned_token(self, assignment: dict[str, str]) -> str:
        """A warm sandbox's token, from its assignment (sealed as in RunTask)."""
        return open_sealed_sandbox_token(self.session.client("kms"), assignment, assignment["CONVERSATION_ID"])

    def agent_server_url(self, conversation_id: str, port: int = 8000) -> str:
        """Where the sandbox's agent-server listens: its task's private address (the mode
        "task", as on AWS) or loopback (the local stack's)."""
        if services.get_config().sandbox_agent_server_address == "loopback":
            return f"http://127.0.0.1:{port}"
        task = self.wait_for(lambda: self.sandbox_task(conversation_id), what="the sandbox task")
        details = task["attachments"][0]["details"]
        address = next(item["value"] for item in details if item["name"] == "privateIPv4Address")
        return f"http://{address}:{port}"

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


def make_harness(
    monkeypatch: pytest.MonkeyPatch,
    parameters: dict[str, str] | None = None,
    environment_overrides: dict[str, str] | None = None,
) -> WorkflowHarness:
    """`environment_overrides` of the functions' environment; the sandbox's agent-server is on
    loopback unless SANDBOX_AGENT_SERVER_ADDRESS says "task"."""
    aws.client.cache_clear()
    session = ClientReusingSession(region_name="us-east-1")
    # A stack name of its own: a moto account another test left behind cannot collide with it.
    stack_name = f"it{uuid.uuid4().hex[:6]}"
    resources = provision(stack_name, {"SandboxHeartbeatSeconds": "30", **(parameters or {})}, session=session)
    environment = apply_environment(
        resources,
        {
            "ALLOW_LOCAL_REPOSITORIES": "true",
            "SANDBOX_API_URL": "http://127.0.0.1:9/sandbox",
            "SANDBOX_AGENT_SERVER_ADDRESS": "loopback",
            **(environment_overrides or {}),
        },
    )
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    services.reset()
    runtime = LocalLambdaRuntime(resources)
    runtime.install_into_moto()
    stream_arn = resources.attributes["ConversationsTable.StreamArn"]
    pump = StreamPump(stream_arn, runtime, "ConversationStreamFunction", session)
    return WorkflowHarness(resources, runtime, pump, session)


@pytest.fixture
def workflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkflowHarness]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        yield make_harness(monkeypatch)
    aws.client.cache_clear()
    services.reset()


__all__ = ["FakeLambdaContext", "WorkflowHarness", "make_harness"]
