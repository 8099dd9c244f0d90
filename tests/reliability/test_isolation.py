"""Isolation: another user's conversation is invisible through every endpoint, and a full run's
logs, metric lines, stream records, published events, ECS task definitions and Step Functions
histories hold none of the seeded secrets (LLM key, git token, sandbox token)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation_service import observability, services
from conversation_service.dal import aws
from moto import mock_aws

from tests.integration.conftest import MOTO_CONFIG, WorkflowHarness
from tests.reliability.conftest import GIT_TOKEN, LLM_KEY, ApiStack
from tests.reliability.workflow_support import (
    fast_harness,
    run_sandbox,
    sandbox_token,
    settle,
    start,
)

OWNER, OTHER = "owner-user", "other-user"


def _endpoints_with_an_id() -> list[tuple[str, str, Any]]:
    """(method, path, a minimal valid body or None) for every route with a conversation id."""
    from api.app import openapi_schema

    document = openapi_schema()
    found = []
    for path, operations in document["paths"].items():
        if "{conversation_id}" not in path:
            continue
        for method, operation in operations.items():
            schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            found.append((method.upper(), path, _minimal(document, schema) if schema else None))
    return found


def _minimal(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in schema:
        return _minimal(document, schema["anyOf"][0])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {name: _minimal(document, properties[name]) for name in schema.get("required", [])}
    if "enum" in schema:
        return schema["enum"][0]
    return {"string": "x", "integer": 1, "number": 1, "boolean": False, "array": []}.get(kind, "x")


def test_every_endpoint_answers_404_for_another_users_conversation(api_stack: ApiStack) -> None:
    api_stack.configure_user(OWNER)
    api_stack.configure_user(OTHER)
    created = api_stack.api("POST", "/api/conversations", {"repository": "owner/repo"}, user_id=OWNER)
    assert created.status == 200, created.body
    conversation_id = created.body["conversation_id"]
    before = api_stack.api("GET", f"/api/conversations/{conversation_id}", user_id=OWNER).body
    endpoints = _endpoints_with_an_id()
    assert ("GET", "/api/conversations/{conversation_id}", None) in endpoints
    for method, template, body in endpoints:
        path = template.replace("{conversation_id}", conversation_id)
        answer = api_stack.api(method, path, body, user_id=OTHER)
        assert answer.status == 404, (method, path, answer.status, answer.body)
        assert answer.body["msg_id"] == "CONVERSATION$NOT_FOUND"
        assert conversation_id not in json.dumps(answer.body)
    after = api_stack.api("GET", f"/api/conversations/{conversation_id}", user_id=OWNER)
    assert after.status == 200 and after.body == before, "the other user's calls changed nothing"
    listing = api_stack.api("GET", "/api/conversations", user_id=OTHER)
    if listing.status != 405 and listing.status != 404:  # a listing endpoint, where there is one
        assert conversation_id not in json.dumps(listing.body)
    api_stack.assert_counter_matches_items()


# -- no secret anywhere a full run leaves traces ------------------------------------------------
@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkflowHarness]:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")  # the most the service ever logs
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        yield fast_harness(monkeypatch)
    aws.client.cache_clear()
    services.reset()


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _stream_records(harness: WorkflowHarness) -> list[dict[str, Any]]:
    from botocore.config import Config

    streams = harness.session.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))
    arn = harness.resources.attributes["ConversationsTable.StreamArn"]
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
        page = streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=1000)
        records.extend(page["Records"])
    return records


def test_a_full_run_leaks_no_secret(
    harness: WorkflowHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    capture = Capture()
    capture.setFormatter(observability.logger.registered_formatter)
    service_logger = logging.getLogger(observability.logger.name)
    service_logger.addHandler(capture)
    published: list[Any] = []
    events_client = aws.client("events")
    events_client.meta.events.register(
        "before-parameter-build.events.PutEvents", lambda params, **_: published.append(params)
    )
    # The service's own logger at DEBUG (POWERTOOLS_LOG_LEVEL above); everything else at INFO, as
    # in Lambda (botocore at DEBUG logs request bodies: see the test below).
    caplog.set_level(logging.INFO)
    try:
        succeeded = start(harness, tmp_path)
        token = sandbox_token(harness, succeeded)
        run_sandbox(harness, token)
        assert settle(harness, succeeded)["conversation_status"] == "RUNNING"
        failed = start(harness, tmp_path)
        failed_token = sandbox_token(harness, failed)
        run_sandbox(harness, failed_token, fail="STATUS$RUNNING_SETUP_SCRIPT")
        assert settle(harness, failed)["conversation_status"] == "ERROR"
        harness.pump.pump_once()
    finally:
        service_logger.removeHandler(capture)
    sfn = harness.session.client("stepfunctions")
    machine = harness.resources.physical["ConversationWorkflow"]
    histories = [
        sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
        for execution in sfn.list_executions(stateMachineArn=machine)["executions"]
    ]
    ecs = harness.session.client("ecs")
    cluster = harness.resources.attributes["SandboxCluster.Arn"]
    arns = (
        ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"]
        + ecs.list_tasks(cluster=cluster)["taskArns"]
    )
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    task_definitions = [
        ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        for arn in {task["taskDefinitionArn"] for task in tasks}
    ]
    out, err = capsys.readouterr()
    places = {
        "service log lines": "\n".join(capture.lines),
        "captured logging": caplog.text,
        "stdout/stderr (log and metric lines)": out + err,
        "conversations stream records": json.dumps(_stream_records(harness), default=str),
        "published events": json.dumps(published, default=str),
        "Step Functions histories": json.dumps(histories, default=str),
        "ECS task definitions": json.dumps(task_definitions, default=str),
        # RunTask's overrides (also in CloudTrail): the sandbox token goes there sealed.
        "ECS task descriptions": json.dumps(tasks, default=str),
    }
    assert capture.lines and histories and places["conversations stream records"] != "[]"
    secrets = {"LLM key": LLM_KEY, "git token": GIT_TOKEN}
    for name, sandbox in (("sandbox token", token), ("sandbox token (failed run)", failed_token)):
        secrets[name] = sandbox
        secrets[name + " secret part"] = sandbox.split(".", 1)[1]
    for place, text in places.items():
        for name, secret in secrets.items():
            assert secret not in text, f"the {name} appears in the {place}"
    assert "SANDBOX_TOKEN_CIPHERTEXT" in places["ECS task descriptions"]
    assert re.search(r"[0-9a-f]{64}", places["conversations stream records"]), "only the token's hash is stored"


# botocore logs call parameters at DEBUG; observability.py keeps the SDK loggers at INFO or above.
def test_botocore_debug_logging_carries_no_sandbox_token(
    harness: WorkflowHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    conversation_id = start(harness, tmp_path)
    token = sandbox_token(harness, conversation_id)
    assert token.split(".", 1)[1] not in caplog.text
