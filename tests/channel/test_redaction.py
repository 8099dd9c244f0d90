"""The redactor alone (no AWS): which values it finds in an MCP configuration, and the forms of a
secret it replaces."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

from conversation_service.logic.redaction import REDACTED, SecretRedactor, mcp_secret_values

KEY = 'sk-ant-api03-"quoted"/and+slashes=='


def test_every_form_of_a_secret_is_replaced_keys_included() -> None:
    redactor = SecretRedactor([KEY, "short"])
    forms = [KEY, quote(KEY, safe=""), json.dumps(KEY)[1:-1], base64.b64encode(KEY.encode()).decode()]
    forms.append(base64.b64encode(f"x-access-token:{KEY}".encode()).decode())
    event = {"text": " | ".join(forms), "nested": [{KEY: 1}], "n": 3, "short": "short stays"}
    redacted = redactor.redact(event)
    assert redacted["text"] == " | ".join([REDACTED] * len(forms))
    assert redacted["nested"] == [{REDACTED: 1}]
    assert (redacted["n"], redacted["short"]) == (3, "short stays")  # under 8 characters: not a secret
    assert SecretRedactor([]).redact(event) is event


def test_the_secret_values_of_an_mcp_configuration() -> None:
    spec_shape = {
        "shttp_servers": [
            {"url": "https://u:url-password-1@mcp.example.com/?api_key=query-key-12345", "api_key": "k" * 12}
        ],
        "stdio_servers": [{"name": "s", "command": "run", "args": ["--flag"], "env": {"TOKEN": "env-token-value"}}],
    }
    agent_shape = {"remote": {"url": "https://m", "headers": {"Authorization": "Bearer header-token-987"}}}
    found = set(mcp_secret_values(spec_shape)) | set(mcp_secret_values(agent_shape))
    assert {"url-password-1", "query-key-12345", "k" * 12, "env-token-value", "header-token-987"} <= found
    assert not {"run", "--flag", "s", "https://m"} & found
