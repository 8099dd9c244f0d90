"""MCP configuration: the spec's (OpenHands V0) shape in, the agent-server's shape out.

In:  {"shttp_servers": [{"name", "url", "api_key", "timeout"}], "sse_servers": [...],
      "stdio_servers": [{"name", "command", "args", "env"}]}
Out: {"<name>": {"url", "transport": "http"|"sse", "headers", "timeout"} | {"command", "args", "env"}}
The request's servers replace the user's; the service's defaults are then added.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conversation_service.models.domain import Conversation
    from conversation_service.ports import ContextStore

_REMOTE_KINDS = (("shttp_servers", "http"), ("sse_servers", "sse"))


def merge_mcp_config(primary: dict[str, Any] | None, defaults: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    merged: dict[str, list[dict[str, Any]]] = {key: list(value) for key, value in (primary or {}).items()}
    for kind, servers in defaults.items():
        present = {json.dumps(server, sort_keys=True) for server in merged.get(kind, [])}
        merged[kind] = merged.get(kind, []) + [
            server for server in servers if json.dumps(server, sort_keys=True) not in present
        ]
    return merged


def _unique_name(wanted: str | None, fallback: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", wanted or fallback).strip("-") or fallback
    name, counter = base, 2
    while name in taken:
        name, counter = f"{base}-{counter}", counter + 1
    taken.add(name)
    return name


def to_agent_server_mcp(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    servers: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for kind, transport in _REMOTE_KINDS:
        for index, server in enumerate(config.get(kind) or []):
            entry: dict[str, Any] = {"url": server["url"], "transport": transport}
            if server.get("api_key"):
                entry["headers"] = {"Authorization": f"Bearer {server['api_key']}"}
            if server.get("timeout"):
                entry["timeout"] = float(server["timeout"])
            servers[_unique_name(server.get("name"), f"{transport}-{index + 1}", taken)] = entry
    for index, server in enumerate(config.get("stdio_servers") or []):
        entry = {"command": server["command"], "args": list(server.get("args") or []), "transport": "stdio"}
        if server.get("env"):
            entry["env"] = dict(server["env"])
        servers[_unique_name(server.get("name"), f"stdio-{index + 1}", taken)] = entry
    return servers


def sealed_mcp_config_of(context: ContextStore, conversation: Conversation) -> str | None:
    """The conversation's sealed MCP servers, from the item or, when large, from S3."""
    if conversation.sealed_mcp_config_key:
        return str(context.get_json(conversation.sealed_mcp_config_key)["sealed_mcp_config"])
    return conversation.sealed_mcp_config
