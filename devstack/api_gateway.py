"""A local stand-in for the stack's API Gateway REST API (template.yaml `Api`).

Each HTTP request becomes the REST proxy event API Gateway would send (`/api/{proxy+}` ->
ApiFunction, `/sandbox/{proxy+}` -> SandboxApiFunction) and the handler's answer goes back as
is. Like the deployed API, a request to /api with an `Authorization` header goes through the
TOKEN authorizer (AuthorizerFunction) first, and refusals answer with the template's gateway
responses. Without the header the handler's LOCAL_USER_ID applies (local stack only).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from devstack.lambda_runtime import FunctionError, LocalLambdaRuntime
from devstack.template_resources import ACCOUNT_ID, REGION, StackResources, load_template

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
JSON = "application/json"


@dataclass(frozen=True)
class Route:
    prefix: str  # "/api/"
    resource: str  # "/api/{proxy+}"
    function: str  # logical id
    authorizer: str | None  # logical id of the TOKEN authorizer, None for Auth: NONE


@dataclass(frozen=True)
class GatewayAnswer:
    status: int
    headers: dict[str, list[str]]
    body: bytes


class GatewayResponses:
    """The `GatewayResponses` of the template's API: bodies API Gateway itself answers with."""

    _FALLBACK = {
        "UNAUTHORIZED": (401, {"message": "Unauthorized"}),
        "ACCESS_DENIED": (403, {"message": "User is not authorized to access this resource"}),
        "DEFAULT_5XX": (502, {"message": "Internal server error"}),
    }

    def __init__(self, template: dict[str, Any], api_logical_id: str = "Api") -> None:
        properties = template["Resources"].get(api_logical_id, {}).get("Properties", {})
        self._responses: dict[str, Any] = dict(properties.get("GatewayResponses", {}))

    def answer(self, kind: str, status: int | None = None) -> GatewayAnswer:
        fallback_status, fallback_body = self._FALLBACK.get(kind, (500, {"message": "Internal server error"}))
        configured = self._responses.get(kind, {})
        body_text = configured.get("ResponseTemplates", {}).get(JSON) or json.dumps(fallback_body)
        code = status or int(configured.get("StatusCode", fallback_status))
        return GatewayAnswer(code, {"Content-Type": [JSON]}, body_text.encode())


def _logical_id_of(value: Any) -> str:
    """`!GetAtt X.Arn` / `!Ref X` -> "X"."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return str(target[0] if isinstance(target, list) else str(target).split(".", 1)[0])
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    raise ValueError(f"not a reference: {value!r}")


def rest_api_routes(template: dict[str, Any], api_logical_id: str = "Api") -> list[Route]:
    """The `{proxy+}` routes of the template's REST API, with the authorizer each one has."""
    auth = template["Resources"][api_logical_id].get("Properties", {}).get("Auth", {})
    authorizers = {name: _logical_id_of(spec["FunctionArn"]) for name, spec in auth.get("Authorizers", {}).items()}
    routes = []
    for logical_id, spec in template["Resources"].items():
        if spec.get("Type") != "AWS::Serverless::Function":
            continue
        for event in spec.get("Properties", {}).get("Events", {}).values():
            properties = event.get("Properties", {})
            if event.get("Type") != "Api" or _logical_id_of(properties.get("RestApiId")) != api_logical_id:
                continue
            path = str(properties["Path"])
            if not path.endswith("/{proxy+}") or str(properties.get("Method", "ANY")).upper() != "ANY":
                raise NotImplementedError(f"only ANY /<prefix>/{{proxy+}} routes are served locally, not {path}")
            authorizer_name = properties.get("Auth", {}).get("Authorizer", auth.get("DefaultAuthorizer"))
            authorizer = None if authorizer_name in (None, "NONE") else authorizers[authorizer_name]
            routes.append(Route(path.removesuffix("{proxy+}"), path, logical_id, authorizer))
    # API Gateway matches the most specific resource first (/sandbox/v1/pool/{proxy+} before /sandbox/{proxy+}).
    return sorted(routes, key=lambda route: len(route.prefix), reverse=True)


def proxy_event(
    *,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    route: Route,
    stage: str,
    source_ip: str,
    domain: str,
    authorizer: dict[str, Any] | None,
) -> dict[str, Any]:
    """The API Gateway REST proxy event for one request (tests/support/api_gateway.py `api_event`: same shape)."""
    parts = urlsplit(target)
    path = parts.path
    query_pairs = parse_qsl(parts.query, keep_blank_values=True)
    multi_query: dict[str, list[str]] = {}
    for name, value in query_pairs:
        multi_query.setdefault(name, []).append(value)
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    try:
        text: str | None = body.decode("utf-8") if body else None
        is_base64 = False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode(), True
    request_context: dict[str, Any] = {
        "resourcePath": route.resource,
        "httpMethod": method,
        "path": f"/{stage}{path}",
        "stage": stage,
        "requestId": str(uuid.uuid4()),
        "requestTimeEpoch": int(time.time() * 1000),
        "protocol": "HTTP/1.1",
        "domainName": domain,
        "accountId": ACCOUNT_ID,
        "apiId": "localapi",
        "identity": {"sourceIp": source_ip, "userAgent": multi_headers.get("User-Agent", [None])[-1]},
    }
    if authorizer is not None:
        request_context["authorizer"] = authorizer
    return {
        "resource": route.resource,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": unquote(path[len(route.prefix) :])},
        "stageVariables": None,
        "requestContext": request_context,
        "body": text,
        "isBase64Encoded": is_base64,
    }


def _policy_allows(policy: dict[str, Any], method_arn: str) -> bool:
    """IAM evaluation of an authorizer's policy for `execute-api:Invoke` on one method ARN."""
    allowed = False
    for statement in policy.get("Statement", []):
        resources = statement.get("Resource", [])
        resources = resources if isinstance(resources, list) else [resources]
        if not any(fnmatch.fnmatchcase(method_arn, pattern) for pattern in resources):
            continue
        if statement.get("Effect") == "Deny":
            return False
        if statement.get("Effect") == "Allow":
            allowed = True
    return allowed


FAULTY_SANDBOX_PATHS = ("/sandbox/v1/agent-events", "/sandbox/v1/agent-conversation", "/sandbox/v1/inbox")
"""The sandbox's channel calls that `--sandbox-api-faults` fails: webhook posts, statuses, polls, acks."""


class SandboxApiFaults:
    """Fails a share of the sandbox's channel calls with a 502, half of them after the handler ran
    (the work is done, the answer is lost), as an unreliable network or gateway would."""

    def __init__(self, share: float, seed: int = 7) -> None:
        self.share = share
        self.injected = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self, path: str) -> str | None:
        """None (answer normally), "before" or "after" (fail before or after invoking the handler)."""
        if self.share <= 0 or not path.startswith(FAULTY_SANDBOX_PATHS):
            return None
        with self._lock:
            if self._random.random() >= self.share:
                return None
            self.injected += 1
            return "before" if self._random.random() < 0.5 else "after"


class LocalRestApi:
    """Routes a request to its function, through the authorizer when the template says so."""

    def __init__(
        self, resources: StackResources, runtime: LocalLambdaRuntime, faults: SandboxApiFaults | None = None
    ) -> None:
        template = load_template()
        self._runtime = runtime
        self._routes = rest_api_routes(template)
        self._stage = str(resources.parameters.get("Environment", "dev"))
        self._responses = GatewayResponses(template)
        self._faults = faults or SandboxApiFaults(0.0)

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str, domain: str
    ) -> GatewayAnswer:
        path = urlsplit(target).path
        route = next((route for route in self._routes if path.startswith(route.prefix) and path != route.prefix), None)
        if route is None:
            message = "Not found: this API serves /api/* and /sandbox/* (documentation: /api/docs)"
            return GatewayAnswer(404, {"Content-Type": [JSON]}, json.dumps({"message": message}).encode())
        if len(body) > MAX_BODY_BYTES:
            return GatewayAnswer(413, {"Content-Type": [JSON]}, b'{"message": "Request Too Long"}')
        authorizer: dict[str, Any] | None = None
        token = next((value for name, value in reversed(headers) if name.lower() == "authorization"), None)
        if route.authorizer and token is not None:
            outcome = self._authorize(route.authorizer, token, method, path)
            if isinstance(outcome, GatewayAnswer):
                return outcome
            authorizer = outcome
        event = proxy_event(
            method=method,
            target=target,
            headers=headers,
            body=body,
            route=route,
            stage=self._stage,
            source_ip=source_ip,
            domain=domain,
            authorizer=authorizer,
        )
        fault = self._faults.draw(path)
        if fault == "before":
            return self._responses.answer("DEFAULT_5XX", 502)
        try:
            result = self._runtime.invoke(route.function, event)
        except FunctionError:
            return self._responses.answer("DEFAULT_5XX", 502)
        if fault == "after":
            return self._responses.answer("DEFAULT_5XX", 502)
        return self._integration_answer(result)

    def _authorize(self, function: str, token: str, method: str, path: str) -> dict[str, Any] | GatewayAnswer:
        method_arn = f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:localapi/{self._stage}/{method}{path}"
        try:
            result = self._runtime.invoke(
                function, {"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn}
            )
        except FunctionError as error:
            if str(error) == "Unauthorized":  # the one message API Gateway turns into 401
                return self._responses.answer("UNAUTHORIZED")
            return self._responses.answer("DEFAULT_5XX", 500)  # AUTHORIZER_FAILURE
        if not isinstance(result, dict) or "principalId" not in result:
            return self._responses.answer("DEFAULT_5XX", 500)  # AUTHORIZER_CONFIGURATION_ERROR
        if not _policy_allows(result.get("policyDocument") or {}, method_arn):
            return self._responses.answer("ACCESS_DENIED")
        context = {key: value for key, value in (result.get("context") or {}).items() if value is not None}
        return {**context, "principalId": result["principalId"]}

    def _integration_answer(self, result: Any) -> GatewayAnswer:
        if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
            return self._responses.answer("DEFAULT_5XX", 502)  # "Malformed Lambda proxy response"
        headers: dict[str, list[str]] = {}
        for name, value in (result.get("headers") or {}).items():
            headers[name] = [str(value)]
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers[name] = [str(value) for value in values]
        raw = result.get("body") or ""
        body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
        return GatewayAnswer(int(result["statusCode"]), headers, body)


class _RequestHandler(BaseHTTPRequestHandler):
    server: LocalApiServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        api = self.server.api
        if api is None:
            self._answer(GatewayAnswer(503, {"Content-Type": [JSON]}, b'{"message": "The local stack is starting"}'))
            return
        answer = api.handle(
            self.command,
            self.path,
            list(self.headers.items()),
            body,
            self.client_address[0],
            self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}",
        )
        self._answer(answer)

    def _answer(self, answer: GatewayAnswer) -> None:
        self.send_response(answer.status, HTTPStatus(answer.status).phrase if answer.status in HTTPStatus else "")
        for name, values in answer.headers.items():
            if name.lower() in {"content-length", "connection", "transfer-encoding"}:
                continue
            for value in values:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LocalApiServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of 50 clients must queue, not be reset (the default is 5)

    def __init__(self, port: int, api: LocalRestApi | None) -> None:
        self.api = api
        super().__init__(("127.0.0.1", port), _RequestHandler)
