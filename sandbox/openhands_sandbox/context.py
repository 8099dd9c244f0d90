"""The conversation context served by ``GET /v1/context``, parsed and checked."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

COMMIT_PATTERN = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
REPOSITORY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
DEFAULT_SETUP_SCRIPT_TIMEOUT_SECONDS = 600.0


class ContextError(ValueError):
    """The context is not what docs/sandbox-protocol.md describes."""


@dataclass(frozen=True)
class RepositoryContext:
    clone_url: str
    name: str
    branch: str | None
    commit: str
    username: str | None
    password: str | None = field(repr=False)


@dataclass(frozen=True)
class AgentContext:
    agent: str
    max_iterations: int | None
    confirmation_mode: bool
    security_analyzer: str | None


@dataclass(frozen=True)
class LlmContext:
    model: str
    api_key: str | None = field(repr=False)
    base_url: str | None


@dataclass(frozen=True)
class FirstMessage:
    text: str
    image_urls: tuple[str, ...]


@dataclass(frozen=True)
class ConversationContext:
    conversation_id: str
    repository: RepositoryContext | None
    workspace_branch: str | None
    agent: AgentContext
    llm: LlmContext
    session_api_key: str = field(repr=False)
    first_message: FirstMessage | None
    conversation_instructions: str | None
    mcp_config: dict[str, Any]
    setup_script_timeout_seconds: float

    def secrets(self) -> list[str]:
        """Every value that must never reach a log, an event or a child's environment."""
        values = [self.session_api_key, self.llm.api_key, *mcp_secrets(self.mcp_config)]
        if self.repository is not None:
            values.append(self.repository.password)
        return [value for value in values if value]

    @classmethod
    def from_json(cls, data: Any) -> ConversationContext:
        obj = _object(data, "context")
        session_api_key = _string(obj, "session_api_key", "context")
        return cls(
            conversation_id=_string(obj, "conversation_id", "context"),
            repository=_repository(obj.get("repository")),
            workspace_branch=_optional_string(obj, "workspace_branch", "context"),
            agent=_agent(obj.get("agent")),
            llm=_llm(obj.get("llm")),
            session_api_key=session_api_key,
            first_message=_first_message(obj.get("first_message")),
            conversation_instructions=_optional_string(obj, "conversation_instructions", "context"),
            mcp_config=_object(obj.get("mcp_config") or {}, "mcp_config"),
            setup_script_timeout_seconds=_setup_timeout(obj.get("setup_script_timeout_seconds")),
        )


MCP_SECRET_FIELDS = ("headers", "env")
"""Fields of an MCP server whose values are credentials (``Authorization``, API keys)."""
MCP_SECRET_KEYS = ("api_key", "token", "auth")


def mcp_secrets(mcp_config: dict[str, Any]) -> list[str]:
    """Every header and environment value of every MCP server, and any key or token field.

    Header names and variable names are not secret; their values are treated as if they
    all were (an ``X-Api-Key`` header, a ``GITHUB_TOKEN`` variable).
    """
    found: list[str] = []
    servers = mcp_config.get("mcpServers", mcp_config)
    for server in servers.values() if isinstance(servers, dict) else []:
        if not isinstance(server, dict):
            continue
        for name in MCP_SECRET_FIELDS:
            values = server.get(name)
            if isinstance(values, dict):
                found.extend(value for value in values.values() if isinstance(value, str))
        for name, value in server.items():
            if isinstance(value, str) and any(key in name.lower() for key in MCP_SECRET_KEYS):
                found.append(value)
    # "Bearer <key>": the key alone is masked too, wherever it appears without the scheme.
    schemes = ("bearer ", "basic ", "token ")
    return found + [value.split(" ", 1)[1].strip() for value in found if value.lower().startswith(schemes)]


def _repository(data: Any) -> RepositoryContext | None:
    if data is None:
        return None
    obj = _object(data, "repository")
    name = _string(obj, "name", "repository")
    if not REPOSITORY_NAME_PATTERN.match(name) or name in {".", ".."}:
        raise ContextError(f"repository.name {name!r} is not a plain directory name")
    commit = _string(obj, "commit", "repository").lower()
    if not COMMIT_PATTERN.match(commit):
        raise ContextError("repository.commit is not a full commit hash")
    clone_url, url_username, url_password = split_url_credentials(_string(obj, "clone_url", "repository"))
    password = _optional_string(obj, "password", "repository")
    return RepositoryContext(
        clone_url=clone_url,
        name=name,
        branch=_optional_string(obj, "branch", "repository"),
        commit=commit,
        username=_optional_string(obj, "username", "repository") if password else url_username,
        password=password or url_password,
    )


def split_url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``https://user:secret@host/r.git`` -> (``https://host/r.git``, user, secret).

    A password inside the clone URL would end up in git's argv and ``.git/config``; it is
    moved out and handled like the ``password`` field. Other URLs are returned unchanged.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"http", "https"} or parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    clean = urllib.parse.urlunsplit(parts._replace(netloc=host))
    username = urllib.parse.unquote(parts.username) if parts.username else None
    return clean, username, urllib.parse.unquote(parts.password)


def _agent(data: Any) -> AgentContext:
    obj = _object(data or {}, "agent")
    max_iterations = obj.get("max_iterations")
    if max_iterations is not None and (
        not isinstance(max_iterations, int) or isinstance(max_iterations, bool) or max_iterations < 1
    ):
        raise ContextError("agent.max_iterations must be a positive integer")
    confirmation_mode = obj.get("confirmation_mode", False)
    if not isinstance(confirmation_mode, bool):
        raise ContextError("agent.confirmation_mode must be a boolean")
    return AgentContext(
        agent=_optional_string(obj, "agent", "agent") or "CodeActAgent",
        max_iterations=max_iterations,
        confirmation_mode=confirmation_mode,
        security_analyzer=_optional_string(obj, "security_analyzer", "agent"),
    )


def _llm(data: Any) -> LlmContext:
    obj = _object(data, "llm")
    return LlmContext(
        model=_string(obj, "model", "llm"),
        api_key=_optional_string(obj, "api_key", "llm"),
        base_url=_optional_string(obj, "base_url", "llm"),
    )


def _first_message(data: Any) -> FirstMessage | None:
    if data is None:
        return None
    obj = _object(data, "first_message")
    image_urls = obj.get("image_urls") or []
    if not isinstance(image_urls, list) or not all(isinstance(url, str) for url in image_urls):
        raise ContextError("first_message.image_urls must be a list of strings")
    return FirstMessage(
        text=_optional_string(obj, "text", "first_message") or "",
        image_urls=tuple(image_urls),
    )


def _setup_timeout(value: Any) -> float:
    if value is None:
        return DEFAULT_SETUP_SCRIPT_TIMEOUT_SECONDS
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ContextError("setup_script_timeout_seconds must be a positive number")
    return float(value)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ContextError(f"{where} must be a JSON object")
    return value


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ContextError(f"{where}.{key} must be a non-empty string")
    return value


def _optional_string(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ContextError(f"{where}.{key} must be a string or null")
    return value
