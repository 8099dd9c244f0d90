"""The template wires the channel: its table, what each function may do with it, and the context
bucket's expiry that must not reach a transcript."""

from __future__ import annotations

import json
from typing import Any

from devstack.template_resources import load_template
from tests.lifecycle.test_template import function, statements, templates


def test_the_channel_table() -> None:
    table = load_template()["Resources"]["ChannelTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table["DeletionPolicy"] == "Retain"
    assert [key["AttributeName"] for key in table["Properties"]["KeySchema"]] == ["conversation_id", "sk"]
    variables = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["CHANNEL_TABLE"] == {"Ref": "ChannelTable"}


def _on(properties: dict[str, Any], resource: str) -> set[str]:
    """The actions a function may take on the resources whose reference mentions `resource`."""
    found: set[str] = set()
    for statement in statements(properties):
        if resource in json.dumps(statement.get("Resource")):
            action = statement["Action"]
            found |= {action} if isinstance(action, str) else set(action)
    return found


def test_who_may_use_the_channel() -> None:
    api, sandbox_api, conversation_stream = (
        function(name) for name in ("ApiFunction", "SandboxApiFunction", "ConversationStreamFunction")
    )
    assert _on(api, "ChannelTable") == {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"}
    assert _on(sandbox_api, "ChannelTable") == {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }
    assert _on(conversation_stream, "ChannelTable") == {"dynamodb:Query", "dynamodb:BatchWriteItem"}
    # Objects: the sandbox writes, the owner's API reads, only under conversation-events/.
    assert _on(sandbox_api, "conversation-events/*") == {"s3:PutObject"}
    assert _on(api, "conversation-events/*") == {"s3:GetObject"}
    assert "S3CrudPolicy" not in templates(sandbox_api)


def test_context_expiry_does_not_reach_the_transcript() -> None:
    bucket = load_template()["Resources"]["ContextBucket"]["Properties"]
    for rule in bucket["LifecycleConfiguration"]["Rules"]:
        if "ExpirationInDays" in rule:
            assert rule["Prefix"] == "conversations/"
