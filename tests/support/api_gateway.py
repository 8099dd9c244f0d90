"""API Gateway as the functions see it: REST proxy events, a Lambda context, and the API's real
handler called with them."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote


@dataclass
class FakeLambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def api_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    user_id: str | None = "user-1",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    raw_body: str | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event as the Lambda integration delivers it: `path` as the client
    sent it (percent-encoded), `pathParameters` decoded (devstack/api_gateway.py `proxy_event`)."""
    authorizer = {"principalId": user_id, "user_id": user_id} if user_id else None
    return {
        "resource": "/api/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "multiValueHeaders": {},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "pathParameters": {"proxy": unquote(path.removeprefix("/api/"))},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/api/{proxy+}",
            "httpMethod": method,
            "path": f"/dev{path}",
            "stage": "dev",
            "requestId": str(uuid.uuid4()),
            "accountId": "123456789012",
            "apiId": "localapi",
            "identity": {"sourceIp": "127.0.0.1"},
            **({"authorizer": authorizer} if authorizer else {}),
        },
        "body": raw_body if raw_body is not None else (json.dumps(body) if body is not None else None),
        "isBase64Encoded": False,
    }


@dataclass
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: str = ""


def call_api(event: dict[str, Any]) -> ApiResponse:
    """The ApiFunction's real Lambda handler, as API Gateway invokes it."""
    from api.app import lambda_handler  # imported when called: it checks its environment

    response = lambda_handler(event, FakeLambdaContext())
    raw = response.get("body") or ""
    headers = {key.lower(): value for key, value in (response.get("headers") or {}).items()}
    for key, values in (response.get("multiValueHeaders") or {}).items():
        headers.setdefault(key.lower(), values[0])
    return ApiResponse(response["statusCode"], json.loads(raw) if raw else None, headers, raw)
