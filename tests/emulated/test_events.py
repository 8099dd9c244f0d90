"""events/: one sample event per function (for `sam local invoke -e` and for reading), kept true
to the handlers and models they feed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import (
    APIGatewayProxyEvent,
    DynamoDBStreamEvent,
)
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerTokenEvent,
)
from conversation_service import services
from conversation_service.dal.aws import from_item
from conversation_service.logic.identity import api_key_hash
from conversation_service.models.api import CreateConversationRequest
from conversation_service.models.context import SandboxEvent, SandboxReady
from conversation_service.models.domain import Conversation
from conversation_service.models.pool import PoolIdleReport

from tests.emulated.support import call_api
from tests.helpers import FakeLambdaContext

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
FUNCTIONS = ROOT / "functions"


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def test_every_event_file_is_json() -> None:
    files = sorted(EVENTS.glob("*.json"))
    assert files
    for path in files:
        assert isinstance(json.loads(path.read_text()), dict), path.name


@pytest.mark.parametrize("function", sorted(path.name for path in FUNCTIONS.iterdir() if (path / "app.py").exists()))
def test_every_function_has_a_sample_event(function: str) -> None:
    names = [path.stem for path in EVENTS.glob("*.json")]
    assert any(name == function or name.startswith(f"{function}_") for name in names), function


@pytest.mark.parametrize("name", sorted(path.name for path in EVENTS.glob("api_*.json")))
def test_api_events_parse_and_reach_their_route(stack, name: str) -> None:
    raw = load(name)
    event = APIGatewayProxyEvent(raw)
    assert event.path.startswith("/api/") and event.request_context.authorizer.get("user_id")
    if event.body:
        CreateConversationRequest.model_validate_json(event.body)
    # Through the real handler: no 422 (the body is valid) and no route-level 404. The user has
    # no settings, so a create stops before reaching the network; a get finds nothing.
    response = call_api(raw)
    expected = {"POST": (400, "CONFIGURATION$SETTINGS_NOT_FOUND"), "GET": (404, "CONVERSATION$NOT_FOUND")}
    assert (response.status, response.body["msg_id"]) == expected[event.http_method], response.body


def test_the_authorizer_event_parses_and_is_allowed_for_its_key(stack) -> None:
    from authorizer.app import lambda_handler

    raw = load("authorizer.json")
    event = APIGatewayAuthorizerTokenEvent(raw)
    assert event.get_type == "TOKEN"
    assert event.parsed_arn.resource == "api/conversations"
    key = event.authorization_token.removeprefix("Bearer ")
    services.user_store().save_api_key_hash(api_key_hash(key), "user-1", "2026-01-01T00:00:00Z")
    policy = lambda_handler(raw, FakeLambdaContext())
    assert policy["context"] == {"user_id": "user-1"}
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"


def test_workflow_events_carry_what_their_steps_read() -> None:
    (record,) = DynamoDBStreamEvent(load("conversation_stream.json")).records
    assert record.event_name is not None and record.event_name.name == "INSERT"
    image = from_item(record.raw_event["dynamodb"]["NewImage"])
    conversation = Conversation.model_validate({key: image[key] for key in Conversation.model_fields if key in image})
    assert conversation.conversation_status == "STARTING"
    conversation_id = conversation.conversation_id

    assert load("initialize_context.json") == {"conversation_id": conversation_id}
    launch = load("launch_sandbox.json")
    assert set(launch) == {"conversation_id", "task_token"} and launch["conversation_id"] == conversation_id
    running = load("mark_running.json")
    assert running["conversation_id"] == conversation_id
    SandboxReady.model_validate(running["sandbox"])
    failure = load("record_failure.json")
    assert failure["conversation_id"] == conversation_id
    assert set(failure["error"]) == {"Error", "Cause"}
    assert json.loads(failure["error"]["Cause"])["message"]


def test_sandbox_api_events_are_proxy_events_for_its_routes() -> None:
    context = APIGatewayProxyEvent(load("sandbox_api_context.json"))
    assert (context.http_method, context.path) == ("GET", "/sandbox/v1/context")
    report = APIGatewayProxyEvent(load("sandbox_api_event.json"))
    assert (report.http_method, report.path) == ("POST", "/sandbox/v1/events")
    SandboxEvent.model_validate_json(report.body or "")
    for event in (context, report):
        assert event.headers["Authorization"].startswith("Bearer ")
        assert "authorizer" not in event.raw_event["requestContext"], "the sandbox API has no API-key authorizer"


def test_the_pool_events_feed_their_handlers_models() -> None:
    idle = APIGatewayProxyEvent(load("sandbox_pool_idle.json"))
    assert (idle.http_method, idle.path) == ("POST", "/sandbox/v1/pool/idle")
    assert idle.headers["Authorization"].startswith("Bearer ")
    PoolIdleReport.model_validate_json(idle.body or "")
    schedule = load("pool_reconciler.json")
    assert schedule["detail-type"] == "Scheduled Event" and schedule["source"] == "aws.events"
