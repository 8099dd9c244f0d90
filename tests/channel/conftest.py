"""The channel to a running conversation under moto, through the real handlers: the lifecycle
harness (tests/lifecycle) with the sandbox's side of the channel played by the test."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from conversation_service import services

from tests.lifecycle.conftest import CONVERSATIONS, USER, Lifecycle
from tests.lifecycle.conftest import life as life  # the fixture: two configured users on the whole stack
from tests.support.api_gateway import api_event


def agent_event(index: int, *, text: str | None = None, kind: str = "MessageEvent", **fields: Any) -> dict[str, Any]:
    """An event as the agent-server's webhook posts it (openhands.sdk Event JSON)."""
    return {
        "id": str(uuid.UUID(int=index + 1)),
        "timestamp": f"2026-12-01T19:00:{index // 1000:02d}.{index % 1000:03d}000",
        "source": "agent",
        "kind": kind,
        "llm_message": {"role": "assistant", "content": [{"type": "text", "text": text or f"step {index}"}]},
        **fields,
    }


@dataclass
class Channel:
    """Both ends of one conversation's channel."""

    life: Lifecycle
    conversation_id: str
    token: str
    context: dict[str, Any]
    user: str = USER

    # -- the sandbox's side ---------------------------------------------------------------------
    def sandbox(
        self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        event = api_event(method, f"/sandbox/v1/{path}", body, user_id=None, headers=headers, query=query)
        event["resource"] = "/sandbox/{proxy+}"
        response = self.life.harness.runtime.invoke("SandboxApiFunction", event)
        return int(response["statusCode"]), json.loads(response["body"])

    def post_events(self, events: list[dict[str, Any]], token: str | None = None) -> tuple[int, Any]:
        return self.sandbox("POST", "agent-events", {"events": events}, token=token)

    def inbox(self, wait: float = 0, token: str | None = None) -> list[dict[str, Any]]:
        status, body = self.sandbox("GET", "inbox", query={"wait": str(wait)}, token=token)
        assert status == 200, body
        return list(body["items"])

    def ack(self, item_id: str, token: str | None = None) -> tuple[int, Any]:
        return self.sandbox("POST", f"inbox/{item_id}/ack", token=token)

    def agent_status(self, status: str) -> tuple[int, Any]:
        return self.sandbox("POST", "agent-conversation", {"execution_status": status, "id": "agent-1"})

    # -- the owner's side ------------------------------------------------------------------------
    def api(
        self,
        method: str,
        suffix: str = "",
        body: Any = None,
        *,
        user: str | None = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        path = f"{CONVERSATIONS}/{self.conversation_id}{suffix}"
        event = api_event(method, path, body, user_id=user or self.user, query=query, headers=headers)
        response = self.life.harness.runtime.invoke("ApiFunction", event)
        return int(response["statusCode"]), json.loads(response["body"])

    def events_page(self, **query: Any) -> dict[str, Any]:
        status, body = self.api("GET", "/events", query={k: str(v) for k, v in query.items()} or None)
        assert status == 200, body
        return dict(body)

    def transcript(self, limit: int = 100) -> list[dict[str, Any]]:
        """Every stored event, page by page."""
        found: list[dict[str, Any]] = []
        page_id = None
        while True:
            page = self.events_page(limit=limit, **({"page_id": page_id} if page_id else {}))
            found += page["results"]
            if not page["results"]:
                return found
            page_id = page["next_page_id"]

    def send(self, text: str, **kwargs: Any) -> tuple[int, Any]:
        return self.api("POST", "/messages", {"text": text}, **kwargs)


def open_channel(
    life: Lifecycle, body: dict[str, Any] | None = None, *, user: str = USER, running: bool = True
) -> Channel:
    conversation_id = life.create(body, user=user)
    context: dict[str, Any] = {}
    if running:
        context = life.drive_to_running(conversation_id, user)
    token = life.sandbox_token(conversation_id)
    return Channel(life, conversation_id, token, context, user)


def set_limits(monkeypatch: pytest.MonkeyPatch, **limits: int) -> None:
    """Smaller caps for one test (the functions read their configuration again)."""
    for name, value in limits.items():
        monkeypatch.setenv(name.upper(), str(value))
    services.reset()


def channel_items(life: Lifecycle, conversation_id: str) -> list[dict[str, Any]]:
    table = life.resources.physical["ChannelTable"]
    response = life.session.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="conversation_id = :id",
        ExpressionAttributeValues={":id": {"S": conversation_id}},
    )
    return list(response.get("Items", []))


def event_objects(life: Lifecycle, conversation_id: str) -> list[str]:
    s3 = life.session.client("s3")
    listing = s3.list_object_versions(
        Bucket=life.resources.physical["ContextBucket"], Prefix=f"conversation-events/{conversation_id}/"
    )
    return [item["Key"] for item in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]
