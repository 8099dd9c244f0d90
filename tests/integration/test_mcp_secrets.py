"""MCP servers can carry API keys: they are sealed at rest and reach only the sandbox."""

from __future__ import annotations

from pathlib import Path

import boto3

from tests.integration.conftest import WorkflowHarness
from tests.support.git_repositories import make_repository

MCP_KEY = "mcp-key-5c2e91d0"


def test_mcp_keys_are_sealed_and_delivered_in_the_agent_server_shape(workflow: WorkflowHarness, tmp_path: Path) -> None:
    make_repository(tmp_path / "repo")
    assert workflow.api("POST", "/api/settings", {"llm_model": "m", "llm_api_key": "k"})[0] == 200
    request = {
        "repository": str(tmp_path / "repo"),
        "mcp_config": {
            "shttp_servers": [{"name": "default-mcp-server", "url": "http://localhost:8080", "api_key": MCP_KEY}],
            "stdio_servers": [{"name": "fetch", "command": "uvx", "args": ["mcp-server-fetch"], "env": {"T": MCP_KEY}}],
        },
    }
    status, created = workflow.api("POST", "/api/conversations", request)
    assert status == 200, created
    conversation_id = created["conversation_id"]
    token = workflow.open_sandbox_token(conversation_id)

    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    item = dynamodb.get_item(
        TableName=workflow.resources.physical["ConversationsTable"], Key={"conversation_id": {"S": conversation_id}}
    )["Item"]
    assert MCP_KEY not in str(item)
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = workflow.resources.physical["ContextBucket"]
    context_object = s3.get_object(Bucket=bucket, Key=f"conversations/{conversation_id}/context.json")["Body"].read()
    assert MCP_KEY.encode() not in context_object
    assert MCP_KEY not in str(workflow.history(conversation_id))
    assert MCP_KEY not in str(workflow.conversation(conversation_id))

    status, context = workflow.sandbox("GET", "/sandbox/v1/context", token)
    assert status == 200, context
    assert context["mcp_config"] == {
        "default-mcp-server": {
            "url": "http://localhost:8080",
            "transport": "http",
            "headers": {"Authorization": f"Bearer {MCP_KEY}"},
        },
        "fetch": {"command": "uvx", "args": ["mcp-server-fetch"], "transport": "stdio", "env": {"T": MCP_KEY}},
    }
