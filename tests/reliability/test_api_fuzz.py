"""Schemathesis against docs/openapi.json, in-process: every generated request becomes the API
Gateway proxy event API Gateway would send (as tests/support/api_gateway.api_event builds it) for the real
ApiFunction handler on moto. Over 1000 requests per run: no 5xx, every answer matches the schema
(status code documented, body valid against its schema, content type)."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import schemathesis
from conversation_service.logic import agent_channel as agent_channel_logic
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.conftest import ApiStack
from tests.support.api_gateway import api_event

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
EXAMPLES_PER_OPERATION = 200
MINIMUM_REQUESTS = 1000


class ApiGatewayWsgi:
    """A WSGI application that hands each request to the ApiFunction handler as API Gateway would."""

    def __init__(self, stack: ApiStack, user_id: str) -> None:
        self.stack = stack
        self.user_id = user_id
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        self.server_errors: list[str] = []  # the requests that got a 5xx, for the failure message

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.requests += 1
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        headers = {
            key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)) or None
        try:
            text = raw.decode()
            is_base64 = False
        except UnicodeDecodeError:
            text, is_base64 = base64.b64encode(raw).decode(), True
        event = api_event(
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO") or "/",
            user_id=self.user_id,
            headers=headers,
            query=query,
            raw_body=text if raw else None,
        )
        event["headers"] = headers  # exactly what was sent (no default Content-Type)
        event["isBase64Encoded"] = is_base64
        answer = self._invoke(event)
        self.statuses[answer["statusCode"]] += 1
        if answer["statusCode"] >= 500:
            self.server_errors.append(f"{event['httpMethod']} {event['path']} {event['body']!r}"[:3000])
        body = answer.get("body") or ""
        response_headers = [(key, value) for key, value in (answer.get("headers") or {}).items()]
        for key, values in (answer.get("multiValueHeaders") or {}).items():
            response_headers += [(key, value) for value in values]
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 422: "Unprocessable Entity"}.get(
            answer["statusCode"], "Status"
        )
        start_response(f"{answer['statusCode']} {reason}", response_headers)
        return [body.encode() if isinstance(body, str) else body]

    def _invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        from api.app import lambda_handler

        from tests.support.api_gateway import FakeLambdaContext

        response: dict[str, Any] = lambda_handler(event, FakeLambdaContext())
        return response


def test_generated_requests_get_no_5xx_and_schema_conforming_answers(
    api_stack: ApiStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GET .../events?wait=N on the real conversation would wait N real seconds for an event that
    # never comes: the answer is the same with no wait (the long poll is tested in tests/channel).
    monkeypatch.setattr(agent_channel_logic, "MAX_WAIT_SECONDS", 0)
    api_stack.configure_user("fuzz-user")
    # A real conversation, so the GET route also meets ids that exist.
    created = api_stack.api("POST", "/api/conversations", {"repository": "owner/repo"}, user_id="fuzz-user")
    assert created.status == 200, created.body
    app = ApiGatewayWsgi(api_stack, "fuzz-user")
    schema = schemathesis.openapi.from_path(DOCUMENT)
    schema.app = app
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: list[str] = []
    operations = list(schema.get_all_operations())
    assert operations, "the OpenAPI document lists no operation"

    for result in operations:
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            if "conversation_id" in (case.path_parameters or {}) and app.requests % 10 == 0:
                case.path_parameters["conversation_id"] = created.body["conversation_id"]
            response = case.call(app=app)
            try:
                case.validate_response(response, checks=checks)
            except Exception as error:  # collect, so one run reports every kind of failure
                failures.append(f"{case.method} {case.path}: {type(error).__name__}: {error}"[:2000])

        given(case=operation.as_strategy())(fuzz)()

    summary = f"{app.requests} requests, statuses {dict(app.statuses)}"
    print(summary)  # shown with -rP: the figure docs/reliability.md quotes
    assert app.requests >= MINIMUM_REQUESTS, summary
    assert not app.server_errors, summary + "\n" + "\n".join(app.server_errors[:5])
    assert not failures, summary + "\n" + "\n\n".join(failures[:10])
    api_stack.assert_counter_matches_items()


def test_an_empty_environment_variable_name_is_refused_not_stored(api_stack: ApiStack) -> None:
    """Found by this suite: an MCP server `env` with an empty name was stored; DynamoDB refuses
    empty map keys, and moto stored it and then answered 500 to every read of the item (and to
    every create of that user at the limit, which queries it)."""
    api_stack.configure_user("fuzz-user")
    body = {"mcp_config": {"stdio_servers": [{"name": "s", "command": "c", "env": {"": "x"}}]}}
    answer = api_stack.api("POST", "/api/conversations", body, user_id="fuzz-user")
    assert answer.status == 422, answer.body
    assert answer.body["msg_id"] == "ERROR$VALIDATION"
    assert api_stack.items() == []
