"""Secrets never stored (real values, in the forms a transcript shows them), one conversation's
token opens only its own channel, DELETE removes the channel."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

from tests.channel.conftest import agent_event, channel_items, event_objects, open_channel
from tests.lifecycle.conftest import CONVERSATIONS, LLM_KEY, OTHER_USER, Lifecycle

GITHUB_TOKEN = "ghp_R3alL00kingT0kenV4lue9Zq81xYw2"
MCP_API_KEY = "mcp-key-7f3e1c9a-remote-server"
MCP_ENV_SECRET = "stdio-env-Secret+/=value-41ab"


def _stored(life: Lifecycle, conversation_id: str) -> str:
    """Everything the service keeps for the conversation's channel, as text."""
    s3 = life.session.client("s3")
    bucket = life.resources.physical["ContextBucket"]
    bodies = [
        s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        for key in sorted(set(event_objects(life, conversation_id)))
    ]
    return json.dumps(channel_items(life, conversation_id)) + "\n".join(bodies)


def test_secrets_are_redacted_before_storage(life: Lifecycle) -> None:
    life.configure(provider_tokens={"github": GITHUB_TOKEN})
    mcp = {
        "shttp_servers": [{"name": "remote", "url": "https://mcp.example.com/mcp", "api_key": MCP_API_KEY}],
        "stdio_servers": [{"name": "local", "command": "server", "env": {"SERVICE_TOKEN": MCP_ENV_SECRET}}],
    }
    channel = open_channel(life, {"mcp_config": mcp})
    session_key = channel.context["session_api_key"]
    secrets = {
        "llm key": LLM_KEY,
        "provider token": GITHUB_TOKEN,
        "session key": session_key,
        "mcp api key": MCP_API_KEY,
        "mcp env": MCP_ENV_SECRET,
        "sandbox token": channel.token,
    }
    forms = {
        **secrets,
        "token in a URL": quote(MCP_ENV_SECRET, safe=""),
        "basic auth": base64.b64encode(f"x-access-token:{GITHUB_TOKEN}".encode()).decode(),
    }
    output = (
        f"$ env\nLLM_API_KEY={LLM_KEY}\nSESSION_API_KEY={session_key}\n"
        f"$ git remote -v\norigin https://x-access-token:{GITHUB_TOKEN}@github.com/o/r.git\n"
        f"Authorization: Basic {forms['basic auth']}\nAuthorization: Bearer {MCP_API_KEY}\n"
        f"curl 'https://h/?t={forms['token in a URL']}'\n{json.dumps({'token': MCP_ENV_SECRET})}\n"
        f"SANDBOX_TOKEN={channel.token}\n"
    )
    events = [
        agent_event(0, kind="ObservationEvent", observation={"content": [{"type": "text", "text": output}]}),
        agent_event(1, text="padding " * 2000 + output),  # big: its body goes to S3
        agent_event(2, kind="ActionEvent", action={"command": f"echo {LLM_KEY}"}, **{GITHUB_TOKEN: "as a key"}),
    ]
    assert channel.post_events(events)[0] == 200
    snapshot = {"branch": "main", "head_commit": "a" * 40, "files": [], "diff": f"+KEY={LLM_KEY}\n"}
    assert channel.sandbox("POST", "workspace", snapshot)[0] == 200
    assert event_objects(life, channel.conversation_id)  # the S3 side is checked too

    stored = _stored(life, channel.conversation_id)
    read = json.dumps(channel.transcript()) + json.dumps(channel.api("GET", "/workspace")[1])
    for name, value in forms.items():
        assert value not in stored, f"{name} stored"
        assert value not in read, f"{name} answered"
    assert read.count("<redacted>") >= 12
    assert "git remote -v" in read  # the rest of the output is kept


def test_a_token_opens_only_its_own_conversation(life: Lifecycle) -> None:
    mine = open_channel(life)
    theirs = open_channel(life, user=OTHER_USER)
    status, body = theirs.send("for their agent only")
    assert status == 202
    their_item = body["message_id"]
    assert mine.post_events([agent_event(0, text="mine")])[0] == 200
    assert theirs.post_events([agent_event(0, text="theirs")])[0] == 200  # same event id, its own transcript

    assert mine.inbox() == []  # my token never sees their messages
    assert mine.ack(their_item) == (200, {"status": "ok"})  # acknowledges an item of mine: none
    assert [item["item_id"] for item in theirs.inbox()] == [their_item]
    assert [e["event"]["llm_message"]["content"][0]["text"] for e in mine.transcript()] == ["mine"]
    assert [e["event"]["llm_message"]["content"][0]["text"] for e in theirs.transcript()] == ["theirs"]
    # The owner API: someone else's conversation does not exist.
    for method, suffix, body_ in (
        ("GET", "/events", None),
        ("POST", "/messages", {"text": "hi"}),
        ("POST", "/confirm", {"accept": True}),
        ("GET", "/workspace", None),
    ):
        status, answer = theirs.api(method, suffix, body_, user=mine.user)
        assert (status, answer["msg_id"]) == (404, "CONVERSATION$NOT_FOUND"), (method, suffix)
    status, answer = mine.api("GET", "/events", user=mine.user, query={"limit": "0"})
    assert status == 422
    status, answer = life.call("GET", f"{CONVERSATIONS}/bad..id/events")
    assert (status, answer["msg_id"]) == (400, "ERROR$INVALID_CONVERSATION_ID")


def test_workspace_published_capped_and_kept_after_stop(life: Lifecycle, monkeypatch: Any) -> None:
    from tests.channel.conftest import set_limits

    set_limits(monkeypatch, max_workspace_diff_bytes=2048)
    channel = open_channel(life)
    status, body = channel.api("GET", "/workspace")
    assert (status, body["msg_id"]) == (404, "CONVERSATION$WORKSPACE_NOT_PUBLISHED")
    snapshot = {
        "branch": "openhands-workspace-1",
        "head_commit": "b" * 40,
        "files": [{"path": "hello.txt", "status": "added", "additions": 300, "deletions": 0}],
        "diff": "diff --git a/hello.txt b/hello.txt\n" + "+hello é\n" * 300,
        "diff_truncated": False,
    }
    assert channel.sandbox("POST", "workspace", snapshot) == (200, {"status": "ok"})
    assert channel.api("POST", "/stop")[0] == 200
    status, body = channel.api("GET", "/workspace")
    assert status == 200, body
    assert (body["branch"], body["head_commit"], body["files"]) == (snapshot["branch"], "b" * 40, snapshot["files"])
    assert body["diff_truncated"] is True and body["published_at"]
    assert len(body["diff"].encode()) <= 2048 and snapshot["diff"].startswith(body["diff"])


def test_delete_removes_the_channel(life: Lifecycle) -> None:
    channel = open_channel(life)
    keep = open_channel(life)
    channel.post_events([agent_event(0), agent_event(1, text="z" * 20_000)])
    keep.post_events([agent_event(0)])
    channel.send("pending")
    channel.sandbox("POST", "workspace", {"branch": "main", "diff": "+x\n"})
    assert channel_items(life, channel.conversation_id) and event_objects(life, channel.conversation_id)

    assert life.call("DELETE", f"{CONVERSATIONS}/{channel.conversation_id}") == (200, True)
    life.wait_for(lambda: not channel_items(life, channel.conversation_id), what="the channel purged")
    assert event_objects(life, channel.conversation_id) == []
    assert channel.api("GET", "/events")[0] == 404
    assert len(keep.transcript()) == 1  # others untouched
