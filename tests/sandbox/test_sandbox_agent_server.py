"""The bootstrap with the REAL OpenHands agent-server (``.venv-agent``)."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import pytest
from openhands_sandbox.http_client import http_request, open_http
from openhands_sandbox.processes import AGENT_ENVIRONMENT
from openhands_sandbox.timings import STEPS
from sandbox_harness import (
    AGENT_VENV_PYTHON,
    ControlPlaneDouble,
    Secrets,
    bootstrap_environment,
    control_plane,
    log_lines,
    make_context,
    make_source_repo,
    process_is_alive,
    repository_context,
    start_bootstrap,
)

from tests.support.ports import port_is_open

pytestmark = [
    pytest.mark.agent_server,
    pytest.mark.skipif(
        not AGENT_VENV_PYTHON.exists(),
        reason=f"the agent-server venv is missing ({AGENT_VENV_PYTHON})",
    ),
]

FIRST_MESSAGE = "Fix the flaky test in tests/test_clock.py"
IMAGE_URL = "https://example.com/screenshot.png"
INSTRUCTIONS = "Always answer in French."
READY_TIMEOUT = 120


def agent_server_get(url: str, session_key: str | None) -> Any:
    headers = {"X-Session-API-Key": session_key} if session_key else {}
    with open_http(http_request(url, headers=headers), 10) as response:
        return json.loads(response.read())


def agent_server_pid(stderr: str) -> int:
    (started,) = [line for line in log_lines(stderr) if line["message"] == "agent-server started"]
    return int(started["pid"])


class RunningSandbox:
    def __init__(self, tmp_path: Path, conversation_id: str, secrets: Secrets, plane: ControlPlaneDouble) -> None:
        self.workspace_root = tmp_path / "workspace"
        self.env = bootstrap_environment(
            conversation_id=conversation_id,
            api_url=plane.url,
            token=secrets.token,
            workspace_root=self.workspace_root,
            scratch=tmp_path / "scratch",
            extra={"AGENT_SERVER_PYTHON": str(AGENT_VENV_PYTHON)},
        )
        self.port = int(self.env["AGENT_SERVER_PORT"])
        self.stderr_path = tmp_path / "bootstrap.stderr"
        self.process = start_bootstrap(self.env, self.stderr_path)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def ready_context(tmp_path: Path, conversation_id: str, secrets: Secrets) -> tuple[dict[str, Any], str]:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    source = make_source_repo(
        served_dir,
        feature_files={
            ".openhands/microagents/repo.md": "# Repository notes\n",
            ".openhands/microagents/testing.md": "# How to test\n",
            ".openhands/setup.sh": "touch setup-ran\n",
        },
    )
    repository = repository_context(f"file://{source.path}", source.commits["f1"], branch="feature")
    context = make_context(conversation_id, secrets, repository=repository, first_message=FIRST_MESSAGE)
    context["first_message"]["image_urls"] = [IMAGE_URL]
    context["conversation_instructions"] = INSTRUCTIONS
    context["agent"].update({"max_iterations": 7, "confirmation_mode": True, "security_analyzer": "llm"})
    return context, source.commits["f1"]


def test_reaches_ready_with_a_conversation_holding_the_first_message(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    context, commit = ready_context(tmp_path, conversation_id, sandbox_secrets)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = RunningSandbox(tmp_path, conversation_id, sandbox_secrets, plane)
        try:
            ready = plane.wait_for(lambda e: e["type"] in {"ready", "failed"}, READY_TIMEOUT)
            assert ready["type"] == "ready", ready
            base_url = ready["agent_server_url"]
            conversation_url = f"{base_url}/api/conversations/{ready['agent_conversation_id']}"
            # The agent-server booted before the context came, with a key of the sandbox's own.
            session_key = ready["session_api_key"]
            assert session_key != sandbox_secrets.session_key
            conversation = agent_server_get(conversation_url, session_key)
            events = agent_server_get(f"{conversation_url}/events/search", session_key)["items"]
            listed = agent_server_get(f"{base_url}/api/conversations/search", session_key)["items"]
            with pytest.raises(urllib.error.HTTPError) as unauthorized:
                agent_server_get(f"{base_url}/api/conversations/search", None)
            server_pid = agent_server_pid(sandbox.stderr)
            server_environment = Path(f"/proc/{server_pid}/environ").read_bytes().split(b"\0")
        finally:
            exit_code = sandbox.stop()

    workspace_dir = sandbox.workspace_root / "demo"
    assert plane.phases() == [
        "STATUS$RUNTIME_STARTED",
        "STATUS$SETTING_UP_WORKSPACE",
        "STATUS$RUNNING_SETUP_SCRIPT",
        "STATUS$SETTING_UP_GIT_HOOKS",
        "STATUS$STARTING_AGENT_SERVER",
    ]
    # Each step's seconds, in the order they ran (timings.py; the service checks the names).
    timings = ready.pop("timings")
    assert list(timings) == [step for step in STEPS if step in timings]
    assert set(timings) >= {"process_to_start", "phase_reports", "context_fetch", "clone", "conversation_create"}
    assert all(isinstance(seconds, float) and seconds >= 0 for seconds in timings.values())
    assert ready == {
        "type": "ready",
        "agent_server_url": f"http://127.0.0.1:{sandbox.port}",
        "agent_conversation_id": str(uuid.UUID(hex=conversation_id)),
        "workspace_dir": str(workspace_dir),
        "commit": commit,
        "microagents": ["repo", "testing"],
        "session_api_key": session_key,
    }
    assert (workspace_dir / "setup-ran").is_file()

    (first_message,) = [e for e in events if e["kind"] == "MessageEvent" and e["source"] == "user"]
    content = first_message["llm_message"]["content"]
    assert content[0]["text"] == FIRST_MESSAGE
    assert content[1]["image_urls"] == [IMAGE_URL]
    (system_prompt,) = [e for e in events if e["kind"] == "SystemPromptEvent"]
    assert INSTRUCTIONS in json.dumps(system_prompt)
    assert conversation["id"] in [item["id"] for item in listed]
    assert conversation["workspace"]["working_dir"] == str(workspace_dir)
    assert conversation["max_iterations"] == 7
    assert conversation["confirmation_policy"]["kind"] == "ConfirmRisky"
    assert conversation["security_analyzer"]["kind"] == "LLMSecurityAnalyzer"
    assert unauthorized.value.code == 401
    # The agent's environment (its terminal copies it): the locale and PATH, the agent user's own
    # directories, the server's key, config and tmux directory; its settings are in the config file.
    names = {variable.split(b"=", 1)[0].decode() for variable in server_environment if variable}
    own = {"HOME", "TMPDIR", "TMP", "TEMP", "USER", "LOGNAME"}
    own |= {"SESSION_API_KEY", "OPENHANDS_AGENT_SERVER_CONFIG_PATH", "TMUX_TMPDIR"}
    assert {name for name in names if not name.startswith("LC_")} <= AGENT_ENVIRONMENT | own, names
    assert "WORKSPACE_ROOT" in sandbox.env and "AGENT_SERVER_PORT" in sandbox.env

    # SIGTERM: the agent-server is stopped with us, and we exit 0.
    assert exit_code == 0
    assert not process_is_alive(server_pid)
    assert not port_is_open(sandbox.port)
    for secret in sandbox_secrets.all():
        assert secret not in sandbox.stderr
    assert plane.of_type("failed") == []


def test_exits_non_zero_when_the_agent_server_dies_after_ready(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    context, _ = ready_context(tmp_path, conversation_id, sandbox_secrets)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = RunningSandbox(tmp_path, conversation_id, sandbox_secrets, plane)
        try:
            ready = plane.wait_for(lambda e: e["type"] in {"ready", "failed"}, READY_TIMEOUT)
            assert ready["type"] == "ready", ready
            server_pid = agent_server_pid(sandbox.stderr)
            subprocess.run(["kill", "-KILL", str(server_pid)], check=True, timeout=10)
            exit_code = sandbox.process.wait(timeout=30)
        finally:
            sandbox.stop()

    assert exit_code == 3
    assert "the agent-server exited" in sandbox.stderr
