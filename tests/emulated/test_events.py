"""events/: one sample event per function (for `sam local invoke -e` and for reading), kept true
to the handlers and models they feed."""

from __future__ import annotations

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerTokenEvent,
)
from conversation_service import services
from conversation_service.logic.identity import api_key_hash
from conversation_service.models.api import CreateConversationRequest

from tests.emulated.support import call_api
from tests.support.api_gateway import FakeLambdaContext
from tests.unit.test_sample_events import EVENTS, load


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
