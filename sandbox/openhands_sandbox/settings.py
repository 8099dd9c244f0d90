"""Settings of one sandbox run, read from the environment the control plane gives the task."""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from openhands_sandbox import task_token
from openhands_sandbox.http_client import is_http_url

CONVERSATION_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_SETUP_UID = 1001
"""``oh-setup`` in the image: runs the repository's setup script."""
DEFAULT_AGENT_UID = 1000
"""``openhands`` in the image: runs the agent-server (and so the agent's commands)."""


class SettingsError(ValueError):
    """The environment is missing a variable or holds a value that cannot be used."""


@dataclass(frozen=True)
class SandboxSettings:
    conversation_id: str
    api_url: str
    token: str = field(repr=False)
    workspace_root: Path
    agent_server_host: str
    agent_server_port: int
    agent_server_python: str
    heartbeat_seconds: float
    agent_server_url: str | None
    """Public URL of the agent-server, when the task knows it better than we can guess."""
    agent_server_ready_timeout_seconds: float
    git_fetch_depth: int
    """Depth of the clone; 0 fetches the whole history."""
    git_timeout_seconds: float
    setup_uid: int
    agent_uid: int
    runtime_dir: Path
    """Where the sandbox's private directories are made (HOME/TMPDIR of its users)."""
    inbox_wait_seconds: float = 20.0
    """Long-poll wait of ``GET /v1/inbox`` (the API's maximum is 20)."""
    workspace_diff_cap_bytes: int = 512 * 1024
    """Largest unified diff sent in a workspace report (cut at a line, flagged as truncated)."""

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> SandboxSettings:
        """Read the settings and take the token (and what opened it) out of ``environ``.

        The task gets ``SANDBOX_TOKEN_CIPHERTEXT`` (opened with the task role, task_token.py);
        ``SANDBOX_TOKEN`` in clear is still accepted for tests and hand runs. Removing them from
        the process environment means no child process can inherit them by accident.
        """
        clear_token = environ.pop("SANDBOX_TOKEN", "")
        conversation_id = _required(environ, "CONVERSATION_ID")
        if not CONVERSATION_ID_PATTERN.match(conversation_id):
            raise SettingsError("CONVERSATION_ID must be 32 lowercase hex characters")
        try:
            opened = task_token.consume(environ, conversation_id)
        except task_token.TaskTokenError as error:
            raise SettingsError(f"the sandbox token could not be opened: {error}") from None
        token = opened or clear_token
        if not token:
            raise SettingsError("neither SANDBOX_TOKEN_CIPHERTEXT nor SANDBOX_TOKEN is set")
        api_url = _required(environ, "SANDBOX_API_URL").rstrip("/")
        if not is_http_url(api_url):
            raise SettingsError("SANDBOX_API_URL must be an http(s) URL")
        setup_uid = _integer(environ, "SANDBOX_SETUP_UID", DEFAULT_SETUP_UID, minimum=1)
        agent_uid = _integer(environ, "SANDBOX_AGENT_UID", DEFAULT_AGENT_UID, minimum=1)
        if setup_uid == agent_uid:
            raise SettingsError("SANDBOX_SETUP_UID and SANDBOX_AGENT_UID must be different users")
        return cls(
            conversation_id=conversation_id,
            api_url=api_url,
            token=token,
            workspace_root=Path(environ.get("WORKSPACE_ROOT") or "/workspace").absolute(),
            # The control plane must reach the task: all interfaces by default.
            agent_server_host=environ.get("AGENT_SERVER_HOST") or "0.0.0.0",  # noqa: S104
            agent_server_port=_integer(environ, "AGENT_SERVER_PORT", 8000, minimum=1),
            agent_server_python=environ.get("AGENT_SERVER_PYTHON") or sys.executable,
            heartbeat_seconds=_number(environ, "HEARTBEAT_SECONDS", 10.0),
            agent_server_url=(environ.get("AGENT_SERVER_URL") or None),
            agent_server_ready_timeout_seconds=_number(environ, "AGENT_SERVER_READY_TIMEOUT_SECONDS", 120.0),
            git_fetch_depth=_integer(environ, "SANDBOX_GIT_FETCH_DEPTH", 1, minimum=0),
            git_timeout_seconds=_number(environ, "SANDBOX_GIT_TIMEOUT_SECONDS", 600.0),
            inbox_wait_seconds=min(_number(environ, "SANDBOX_INBOX_WAIT_SECONDS", 20.0), 20.0),
            workspace_diff_cap_bytes=_integer(environ, "SANDBOX_WORKSPACE_DIFF_CAP_BYTES", 512 * 1024, minimum=1024),
            setup_uid=setup_uid,
            agent_uid=agent_uid,
            runtime_dir=Path(environ.get("SANDBOX_RUNTIME_DIR") or tempfile.gettempdir()).absolute(),
        )


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise SettingsError(f"{name} is not set")
    return value


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value


def _integer(environ: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value
