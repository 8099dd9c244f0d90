"""Bad input never becomes a 500 or an alarm, and never leaves a conversation half written.

Through the real ApiFunction handler on moto (the `api_stack` fixture): deeply nested and huge
bodies, a nested `replay_json`, and MCP configurations from small to too large. Each answer is
a 4xx in the spec's body (`{"status": "error", "message", "msg_id"}`), and after each one the
tables, the active counter and the context bucket hold nothing of the refused request; an MCP
configuration too large for a DynamoDB item (400 KB) but within the limit is stored sealed in S3
and still reaches the sandbox.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from conversation_service import services
from conversation_service.dal.context_store import ContextStore
from conversation_service.json_limits import MAX_JSON_DEPTH, MAX_REQUEST_BODY_BYTES
from conversation_service.models.api import MAX_MCP_CONFIG_BYTES, MCPConfig

from tests.reliability.conftest import ApiStack
from tests.support.api_gateway import api_event

CREATE = "/api/conversations"
MCP_SECRET = "mcp-hostile-input-secret-0b1c"


@pytest.fixture(autouse=True)
def empty_context_bucket(api_stack: ApiStack) -> None:
    """The fixture empties the tables; the bucket is emptied here (another test may have filled it)."""
    ContextStore(api_stack.resources.physical["ContextBucket"]).purge_prefix("")


def assert_error_body(answer: Any, status: int, msg_id: str) -> None:
    assert answer.status == status, answer.body
    assert answer.body["status"] == "error" and answer.body["msg_id"] == msg_id, answer.body
    assert isinstance(answer.body["message"], str) and answer.body["message"]


def bucket_keys(api_stack: ApiStack) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=api_stack.resources.physical["ContextBucket"])
    return [item["Key"] for item in listing.get("Contents", [])]


def assert_nothing_written(api_stack: ApiStack) -> None:
    assert api_stack.items() == []
    assert api_stack.active_counter() == 0
    assert bucket_keys(api_stack) == []


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,  # json.loads would hit the recursion limit: a 500 before
        '{"initial_user_msg": "x", "mcp_config": ' + nested(MAX_JSON_DEPTH + 5) + "}",
        "[" * 100_000,  # unterminated as well
    ],
    ids=["arrays", "objects inside a field", "unterminated"],
)
def test_deeply_nested_bodies_are_refused(api_stack: ApiStack, raw: str) -> None:
    api_stack.configure_user()
    for path in (CREATE, "/api/settings"):
        answer = api_stack.call(api_event("POST", path, raw_body=raw))
        assert_error_body(answer, 400, "ERROR$JSON_TOO_DEEP")
    assert_nothing_written(api_stack)


def test_a_body_nested_within_the_limit_is_read_as_usual(api_stack: ApiStack) -> None:
    api_stack.configure_user()
    raw = '{"initial_user_msg": "x", "unknown": ' + nested(MAX_JSON_DEPTH - 2) + "}"
    answer = api_stack.call(api_event("POST", CREATE, raw_body=raw))
    assert_error_body(answer, 422, "ERROR$VALIDATION")  # parsed, then refused by the schema


def test_a_huge_body_is_refused_before_it_is_parsed(api_stack: ApiStack) -> None:
    api_stack.configure_user()
    raw = json.dumps({"initial_user_msg": "x" * 50, "replay_json": "y" * (MAX_REQUEST_BODY_BYTES + 1)})
    answer = api_stack.call(api_event("POST", CREATE, raw_body=raw))
    assert_error_body(answer, 413, "ERROR$REQUEST_TOO_LARGE")
    assert_nothing_written(api_stack)


@pytest.mark.parametrize(
    "replay",
    [nested(MAX_JSON_DEPTH + 1), "[" * 50_000 + "]" * 50_000, "not json at all", '{"events": 1'],
    ids=["nested objects", "nested arrays", "not json", "truncated"],
)
def test_a_nested_or_unreadable_replay_json_is_refused(api_stack: ApiStack, replay: str) -> None:
    api_stack.configure_user()
    answer = api_stack.api("POST", CREATE, {"replay_json": replay})
    assert_error_body(answer, 422, "ERROR$VALIDATION")
    assert "replay_json" in answer.body["message"]
    assert_nothing_written(api_stack)


def test_a_real_replay_is_accepted(api_stack: ApiStack) -> None:
    api_stack.configure_user()
    replay = json.dumps([{"source": "user", "action": "message", "args": {"content": "hello"}}])
    answer = api_stack.api("POST", CREATE, {"replay_json": replay})
    assert answer.status == 200, answer.body


def mcp_config(total_bytes: int) -> dict[str, Any]:
    """Stdio servers whose environments add up to about `total_bytes`."""
    value = MCP_SECRET + "v" * 9_000
    per_server = 10
    count = max(1, total_bytes // (len(value) * per_server))
    return {
        "stdio_servers": [
            {"name": f"s{index}", "command": "mcp", "env": {f"K{n}": value for n in range(per_server)}}
            for index in range(count)
        ]
    }


def test_an_mcp_config_too_large_for_the_item_goes_sealed_to_s3_and_reaches_the_sandbox(
    api_stack: ApiStack,
) -> None:
    api_stack.configure_user()
    config = mcp_config(450_000)  # sealed, it alone would exceed DynamoDB's 400 KB
    answer = api_stack.api("POST", CREATE, {"initial_user_msg": "hi", "mcp_config": config})
    assert answer.status == 200, answer.body
    conversation_id = answer.body["conversation_id"]
    (item,) = api_stack.items()
    assert "sealed_mcp_config" not in item and item["sealed_mcp_config_key"]["S"].startswith(
        f"conversations/{conversation_id}/"
    )
    stored = (
        boto3.client("s3")
        .get_object(Bucket=api_stack.resources.physical["ContextBucket"], Key=item["sealed_mcp_config_key"]["S"])[
            "Body"
        ]
        .read()
    )
    assert MCP_SECRET.encode() not in stored  # sealed, not in clear
    conversation = services.conversation_store().get(conversation_id)
    assert conversation is not None
    # What InitializeContext opens (and seals again into the sandbox's context) is all of it.
    opened = services.creation_workflow().requested_mcp_config(conversation)
    assert opened == MCPConfig.model_validate(config).model_dump(mode="json", exclude_none=True)


def test_an_mcp_config_over_the_limit_is_refused_with_nothing_written(api_stack: ApiStack) -> None:
    api_stack.configure_user()
    answer = api_stack.api(
        "POST", CREATE, {"initial_user_msg": "hi", "mcp_config": mcp_config(MAX_MCP_CONFIG_BYTES + 100_000)}
    )
    assert_error_body(answer, 422, "ERROR$VALIDATION")
    assert "mcp_config" in answer.body["message"] and MCP_SECRET not in json.dumps(answer.body)
    assert_nothing_written(api_stack)


def test_a_failed_insert_leaves_no_stored_request_behind(api_stack: ApiStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The large request and the sealed MCP servers went to S3 first; the insert then fails."""
    from conversation_service.dal.conversations import ConversationStore

    api_stack.configure_user()

    def refuse(*_: Any, **__: Any) -> None:
        raise RuntimeError("DynamoDB is down")

    monkeypatch.setattr(ConversationStore, "insert_within_limit", refuse)
    body = {"initial_user_msg": "x" * 70_000, "mcp_config": mcp_config(450_000)}
    answer = api_stack.api("POST", CREATE, body)
    assert_error_body(answer, 500, "STATUS$ERROR")  # the failure itself is ours: a 500, but nothing kept
    assert_nothing_written(api_stack)


def test_stored_requests_are_encrypted_with_the_stacks_key(api_stack: ApiStack) -> None:
    """The context bucket's default encryption (SecretsKey, bucket key) applies to what is stored."""
    api_stack.configure_user()
    answer = api_stack.api("POST", CREATE, {"initial_user_msg": "x" * 70_000})
    assert answer.status == 200, answer.body
    (key,) = bucket_keys(api_stack)
    head = boto3.client("s3").head_object(Bucket=api_stack.resources.physical["ContextBucket"], Key=key)
    assert head["ServerSideEncryption"] == "aws:kms" and head["BucketKeyEnabled"] is True
    assert head["SSEKMSKeyId"] == api_stack.resources.attributes["SecretsKey.Arn"]
