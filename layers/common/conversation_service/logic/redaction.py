"""Secrets out of what the service stores: every string of an event (keys too) has each known
secret value replaced by a marker before the event is written anywhere.

A value is looked for as it is and in the forms it takes in a transcript: percent-encoded (a
token in a URL), JSON-escaped (a secret printed inside a JSON string), base64 (an HTTP Basic
`Authorization` header, with the git user names the service uses).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

REDACTED = "<redacted>"
# Shorter values would match ordinary text ("main", "true"): a secret is never that short.
MIN_SECRET_LENGTH = 8
BASIC_AUTH_USERS = ("x-access-token", "oauth2", "x-token-auth", "git", "openhands")


def secret_forms(value: str) -> set[str]:
    forms = {value, quote(value, safe=""), json.dumps(value)[1:-1], base64.b64encode(value.encode()).decode()}
    for user in BASIC_AUTH_USERS:
        forms.add(base64.b64encode(f"{user}:{value}".encode()).decode())
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class SecretRedactor:
    def __init__(self, secrets: Iterable[str], patterns: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if isinstance(secret, str) and len(secret) >= MIN_SECRET_LENGTH:
                forms |= secret_forms(secret)
        alternatives = [re.escape(form) for form in sorted(forms, key=len, reverse=True)] + list(patterns)
        self._pattern = re.compile("|".join(alternatives)) if alternatives else None

    def redact_text(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern else text

    def redact(self, value: Any) -> Any:
        """A copy of a JSON value with every secret replaced."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {self.redact_text(str(key)): self.redact(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.redact(item) for item in value]
        return value


SECRET_FIELDS = frozenset({"api_key", "headers", "env", "password", "token"})


def mcp_secret_values(config: Any) -> list[str]:
    """The values of an MCP configuration (the spec's shape or the agent-server's) that may be
    keys: api keys, header values (and the token after a `Bearer`), environment values, and
    credentials in URLs."""
    found: list[str] = []

    def strings(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
            found.extend(part for part in value.split() if len(part) >= MIN_SECRET_LENGTH)
        elif isinstance(value, dict):
            for item in value.values():
                strings(item)
        elif isinstance(value, list):
            for item in value:
                strings(item)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in SECRET_FIELDS:
                    strings(item)
                elif key == "url" and isinstance(item, str):
                    found.extend(re.findall(r"[?&][^=&#]*(?:key|token|secret|auth)[^=&#]*=([^&#]+)", item, flags=re.I))
                    found.extend(re.findall(r"//[^/@:]*:([^/@]+)@", item))
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(config)
    return found
