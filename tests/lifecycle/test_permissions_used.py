"""Every AWS call a function makes while conversations live their whole life is one its role
allows, on the resource it names (the other half of tests/reliability/test_least_privilege.py,
which checks that nothing broader is granted).

moto does not evaluate IAM, so a missing permission would only show in AWS (the event intake
function once lacked kms:Encrypt for an event with MCP servers; the launch step could not stop
the task it launched for a closed conversation). Here every boto3 call made inside a function's
invocation is recorded, turned into the IAM actions AWS checks for it (a transaction into its
items' actions, DeleteObjects into the per-object ones, RunTask into TagResource and PassRole
too), and looked up in that function's deployed policy: the action, and a statement for it whose
resource names the table, index, bucket, queue, key or state machine called.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.client import BaseClient

from devstack.lambda_runtime import LocalLambdaRuntime
from tests.lifecycle.conftest import CONVERSATIONS, OTHER_USER, USER, Lifecycle
from tests.reliability.test_least_privilege import as_list, every_statement, refs, translated_template
from tests.support.api_gateway import api_event

TRUSTED = "openhands.integrations"
MCP = {"shttp_servers": [{"url": "https://mcp.example.com", "api_key": "mcp-permission-test-key"}]}


@dataclass(frozen=True)
class Need:
    function: str  # logical id
    action: str  # e.g. dynamodb:UpdateItem
    resource: str  # the physical name or ARN the call named ("" when it names none)
    index: str | None = None


class CallRecorder:
    """boto3 calls made inside a function's invocation, by function (one thread runs one)."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.needs: set[Need] = set()

    def current(self) -> str | None:
        stack = getattr(self.local, "stack", [])
        return stack[-1] if stack else None

    def record(self, client: BaseClient, operation: str, params: dict[str, Any]) -> None:
        function = self.current()
        if function is None:
            return  # the test's own calls
        prefix = client.meta.service_model.signing_name
        prefix = {"stepfunctions": "states"}.get(prefix, prefix)
        for action, resource, index in iam_actions(prefix, operation, params):
            self.needs.add(Need(function, action, resource, index))


def iam_actions(prefix: str, operation: str, params: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """The IAM actions AWS authorises for one API call, with the resource each names."""
    if prefix == "dynamodb" and operation == "TransactWriteItems":
        kinds = {
            "Put": "PutItem",
            "Update": "UpdateItem",
            "Delete": "DeleteItem",
            "ConditionCheck": "ConditionCheckItem",
        }
        for item in params["TransactItems"]:
            ((kind, request),) = item.items()
            yield f"dynamodb:{kinds[kind]}", request["TableName"], None
    elif prefix == "dynamodb":
        yield f"dynamodb:{operation}", params.get("TableName", ""), params.get("IndexName")
    elif prefix == "s3" and operation == "DeleteObjects":
        for item in params["Delete"]["Objects"]:
            yield ("s3:DeleteObjectVersion" if item.get("VersionId") else "s3:DeleteObject"), params["Bucket"], None
    elif prefix == "s3":
        action = {"ListObjectVersions": "ListBucketVersions", "ListObjectsV2": "ListBucket"}.get(operation, operation)
        yield f"s3:{action}", params.get("Bucket", ""), None
        if operation in {"PutObject", "GetObject"}:  # the bucket's SSE-KMS: S3 asks KMS in the caller's name
            yield ("kms:GenerateDataKey" if operation == "PutObject" else "kms:Decrypt"), "via-s3", None
    elif prefix == "ecs" and operation == "RunTask":
        yield "ecs:RunTask", params["taskDefinition"], None
        yield "ecs:TagResource", params["cluster"], None
        yield "iam:PassRole", "", None
    elif prefix == "ecs":
        yield f"ecs:{operation}", params.get("cluster", ""), None
    elif prefix == "states":
        target = params.get("stateMachineArn") or params.get("executionArn") or ""
        yield f"states:{operation}", target, None
    elif prefix == "events":
        for entry in params.get("Entries", []):
            yield "events:PutEvents", entry.get("EventBusName", ""), None
    elif prefix == "sqs":
        yield f"sqs:{operation}", params.get("QueueUrl", ""), None
    else:
        yield f"{prefix}:{operation}", str(params.get("KeyId", "")), None


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> CallRecorder:
    recording = CallRecorder()
    original_call = BaseClient._make_api_call
    original_invoke = LocalLambdaRuntime.invoke

    def make_api_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        recording.record(client, operation, params)
        return original_call(client, operation, params)

    def invoke(runtime: LocalLambdaRuntime, name_or_arn: str, event: Any) -> Any:
        stack = recording.local.__dict__.setdefault("stack", [])
        stack.append(runtime.spec(name_or_arn).logical_id)
        try:
            return original_invoke(runtime, name_or_arn, event)
        finally:
            stack.pop()

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    monkeypatch.setattr(LocalLambdaRuntime, "invoke", invoke)
    return recording


def live_every_part_of_a_conversation(life: Lifecycle) -> None:
    """Settings, create (MCP servers, a large request), list, rename, sandbox to RUNNING, stop,
    start again, delete; the concurrency limit's replacement; an event's creation and a refusal."""
    life.configure(USER, authorized_event_sources=[TRUSTED])
    status, _ = life.call("GET", "/api/settings")
    assert status == 200
    first = life.create({"initial_user_msg": "x" * 70_000, "mcp_config": MCP})
    life.drive_to_running(first)
    status, page = life.call("GET", CONVERSATIONS, query={"limit": "1"})
    assert status == 200, page
    if page.get("next_page_id"):
        life.call("GET", CONVERSATIONS, query={"limit": "1", "page_id": page["next_page_id"]})
    assert life.call("PATCH", f"{CONVERSATIONS}/{first}", {"title": "renamed"})[0] == 200
    assert life.call("GET", "/api/quota")[0] == 200
    assert life.call("POST", f"{CONVERSATIONS}/{first}/stop")[0] == 200
    life.settle()
    assert life.call("POST", f"{CONVERSATIONS}/{first}/start")[0] == 200
    life.drive_to_running(first)
    talk_to_the_running_conversation(life, first)
    others = [life.create({"initial_user_msg": f"more {n}"}) for n in range(3)]  # the third closes the oldest
    life.settle()
    life.put_event(
        TRUSTED, "CreateConversation", {"schema_version": "1", "user_id": USER, "request": {"mcp_config": MCP}}
    )
    life.poll_intake()
    life.put_event(TRUSTED, "CreateConversation", {"schema_version": "1", "user_id": OTHER_USER, "request": {}})
    life.poll_intake()  # OTHER_USER never authorised the source: refused to the dead-letter queue
    assert life.dead_letters()
    for conversation_id in [first, *others]:
        assert life.call("DELETE", f"{CONVERSATIONS}/{conversation_id}")[0] == 200
    life.settle(1.0)


def talk_to_the_running_conversation(life: Lifecycle, conversation_id: str) -> None:
    """The channel, both sides: events (one big: S3), the agent's status, a message (with an
    Idempotency-Key), a confirmation, the inbox and its ack, the workspace; the owner reads them."""
    token = life.sandbox_token(conversation_id)
    events = [
        {"id": "e1", "timestamp": "2026-12-01T10:00:00", "source": "agent", "kind": "MessageEvent"},
        {
            "id": "e2",
            "timestamp": "2026-12-01T10:00:01",
            "source": "agent",
            "kind": "ObservationEvent",
            "out": "o" * 20_000,
        },
    ]
    assert life.sandbox("POST", "/sandbox/v1/agent-events", token, {"events": events})[0] == 200
    status = {"execution_status": "waiting_for_confirmation"}
    assert life.sandbox("POST", "/sandbox/v1/agent-conversation", token, status)[0] == 200
    path = f"{CONVERSATIONS}/{conversation_id}"
    response = life.harness.runtime.invoke(
        "ApiFunction",
        api_event("POST", f"{path}/messages", {"text": "and then?"}, user_id=USER, headers={"Idempotency-Key": "k1"}),
    )
    assert response["statusCode"] == 202, response
    assert life.call("POST", f"{path}/confirm", {"accept": True})[0] == 202
    status_code, inbox = life.sandbox("GET", "/sandbox/v1/inbox", token)
    assert status_code == 200 and len(inbox["items"]) == 2, inbox
    for item in inbox["items"]:
        assert life.sandbox("POST", f"/sandbox/v1/inbox/{item['item_id']}/ack", token)[0] == 200
    workspace = {"branch": "main", "head_commit": "a" * 40, "files": [], "diff": "+x\n"}
    assert life.sandbox("POST", "/sandbox/v1/workspace", token, workspace)[0] == 200
    status_code, page = life.call("GET", f"{path}/events")
    assert status_code == 200 and len(page["results"]) == 2, page
    assert life.call("GET", f"{path}/workspace")[0] == 200


def allowed(statements: list[dict[str, Any]], need: Need, logical_of: dict[str, str]) -> bool:
    for body in statements:
        if body.get("Effect") != "Allow" or need.action not in as_list(body.get("Action")):
            continue
        if need.resource == "via-s3":
            return True  # the statement's condition binds it to the context bucket (checked by the walker)
        named = logical_of.get(need.resource)
        text = json.dumps(body)
        names_it = named is None or named in refs(body.get("Resource")) or named in refs(body.get("Condition"))
        if names_it and (need.index is None or f"/index/{need.index}" in text or "/index/*" in text):
            return True
        if named and "${AWS::StackName}-" in text and need.action.startswith("states:"):
            return True  # the state machine, by the name the template gives it
    return False


def test_every_call_a_function_makes_is_allowed_by_its_role(life: Lifecycle, recorder: CallRecorder) -> None:
    live_every_part_of_a_conversation(life)
    deployed = translated_template()
    statements: dict[str, list[dict[str, Any]]] = {}
    for statement in every_statement(deployed["Resources"]):
        statements.setdefault(statement.owner.removesuffix("Role"), []).append(statement.body)
    logical_of = {str(physical): logical for logical, physical in life.resources.physical.items()}
    logical_of |= {str(value): key.split(".")[0] for key, value in life.resources.attributes.items()}
    exercised = {need.function for need in recorder.needs}
    assert {
        "ApiFunction",
        "ConversationStreamFunction",
        "InitializeContextFunction",
        "LaunchSandboxFunction",
        "SandboxApiFunction",
        "MarkRunningFunction",
        "EventIntakeFunction",
    } <= exercised, exercised
    missing = sorted(
        f"{need.function}: {need.action} on {logical_of.get(need.resource, need.resource)}"
        + (f" index {need.index}" if need.index else "")
        for need in recorder.needs
        if not allowed(statements.get(need.function, []), need, logical_of)
    )
    assert not missing, "AWS would refuse these calls:\n" + "\n".join(missing)
