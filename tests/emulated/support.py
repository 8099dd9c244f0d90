"""Helpers for the unit tests: call the real handlers, serve real git repositories, read moto's tables."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import boto3
from dulwich.repo import Repo
from dulwich.server import DictBackend
from dulwich.web import make_wsgi_chain

from tests.helpers import FakeLambdaContext, api_event

CONVERSATIONS = "/api/conversations"
SETTINGS = "/api/settings"
LLM_KEY = "sk-test-LLM-KEY-0123456789abcdef"
GITHUB_TOKEN = "ghp_TEST_TOKEN_0123456789abcdef"


@dataclass
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: str = ""


def call_api(event: dict[str, Any]) -> ApiResponse:
    """The ApiFunction's real Lambda handler, as API Gateway invokes it."""
    from api.app import lambda_handler

    response = lambda_handler(event, FakeLambdaContext())
    raw = response.get("body") or ""
    headers = {key.lower(): value for key, value in (response.get("headers") or {}).items()}
    for key, values in (response.get("multiValueHeaders") or {}).items():
        headers.setdefault(key.lower(), values[0])
    return ApiResponse(response["statusCode"], json.loads(raw) if raw else None, headers, raw)


def create(body: Any = None, *, user_id: str | None = "user-1", headers: dict[str, str] | None = None) -> ApiResponse:
    return call_api(
        api_event("POST", CONVERSATIONS, body if body is not None else {}, user_id=user_id, headers=headers)
    )


def get_conversation(conversation_id: str, *, user_id: str | None = "user-1") -> ApiResponse:
    return call_api(api_event("GET", f"{CONVERSATIONS}/{conversation_id}", user_id=user_id))


def save_settings(body: dict[str, Any], *, user_id: str = "user-1") -> ApiResponse:
    return call_api(api_event("POST", SETTINGS, body, user_id=user_id))


def configure_user(user_id: str = "user-1", **extra: Any) -> ApiResponse:
    """A user who can create conversations: an LLM model and key (and whatever `extra` adds)."""
    response = save_settings(
        {"llm_model": "anthropic/claude-sonnet-4", "llm_api_key": LLM_KEY, **extra}, user_id=user_id
    )
    assert response.status == 200, response.body
    return response


def conversation_item(table: str, conversation_id: str) -> dict[str, Any]:
    """The raw DynamoDB item (typed attributes), read with a consistent read."""
    response = boto3.client("dynamodb").get_item(
        TableName=table, Key={"conversation_id": {"S": conversation_id}}, ConsistentRead=True
    )
    return response.get("Item", {})


def conversation_items(table: str) -> list[dict[str, Any]]:
    client = boto3.client("dynamodb")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def active_index_ids(table: str, user_id: str) -> list[str]:
    """The user's conversations listed by the sparse ActiveByUser index."""
    response = boto3.client("dynamodb").query(
        TableName=table,
        IndexName="ActiveByUser",
        KeyConditionExpression="active_user_id = :user",
        ExpressionAttributeValues={":user": {"S": user_id}},
    )
    return [item["conversation_id"]["S"] for item in response["Items"]]


def active_counter(users_table: str, user_id: str) -> int:
    response = boto3.client("dynamodb").get_item(
        TableName=users_table, Key={"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "QUOTA"}}, ConsistentRead=True
    )
    return int(response.get("Item", {}).get("active_count", {"N": "0"})["N"])


# -- git servers on loopback ---------------------------------------------------------------
class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def smart_http_git_server(
    repositories: dict[str, Path], middleware: Callable[[Any], Any] | None = None
) -> Iterator[str]:
    """dulwich's smart-HTTP git server on 127.0.0.1; yields the base URL (`http://127.0.0.1:port`).

    `repositories` maps a URL path (e.g. "/owner/repo.git") to a repository directory;
    `middleware` wraps the WSGI application (to demand credentials, say).
    """
    backend = DictBackend({path: Repo(str(directory)) for path, directory in repositories.items()})
    app = make_wsgi_chain(backend)
    server: WSGIServer = make_server(
        "127.0.0.1", 0, middleware(app) if middleware else app, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts TCP connections on 127.0.0.1 and never says a word; yields `http://127.0.0.1:port`."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        listener.close()
