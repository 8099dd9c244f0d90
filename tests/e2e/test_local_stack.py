"""End to end over HTTP: `python -m devstack` runs the service; the spec's own examples drive it.

One test, in order, because each step needs the one before and the last one (Ctrl-C) ends the
stack: boot -> the spec's minimal and full examples + a repository whose setup script fails ->
follow each conversation to RUNNING / ERROR and check the workspace, the setup script, the git
hook and the agent-server -> SIGINT -> nothing the stack started is still running.

The agent-server's session key is never handed out by the service (the sandbox gets it once,
with the context). The test reads it where a person on this machine could: the agent-server
process's own environment (/proc/<pid>/environ, same user).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.local_stack import (
    AGENT_PYTHON,
    ProcessIdentity,
    RunningStack,
    agent_server_pid,
    descendants,
    environment_variable,
    free_port,
    identify,
    processes_using,
)

pytestmark = pytest.mark.e2e

SPEC_PATH = Path(os.environ.get("CONVERSATION_SPEC", "/work/shared/seed/000_704a750d1b4bbd08.txt"))
SPEC_BASE_URL = "http://localhost:3000"
BOOT_TIMEOUT = 90.0
RUNNING_TIMEOUT = 180.0
SHUTDOWN_TIMEOUT = 60.0
LEFTOVER_GRACE = 5.0
CONVERSATION_ID = re.compile(r"^[0-9a-f]{32}$")
EVERY_PHASE = [
    "STATUS$QUEUED",
    "STATUS$INITIALIZING_CONTEXT",
    "STATUS$STARTING_RUNTIME",
    "STATUS$RUNTIME_STARTED",
    "STATUS$SETTING_UP_WORKSPACE",
    "STATUS$RUNNING_SETUP_SCRIPT",
    "STATUS$SETTING_UP_GIT_HOOKS",
    "STATUS$STARTING_AGENT_SERVER",
    "STATUS$READY",
]


@dataclass
class Created:
    label: str
    request: dict[str, Any]
    conversation_id: str
    posted_at: float
    stdout: str = ""
    view: dict[str, Any] | None = None
    seconds_to_end: float | None = None


def spec_example(title: str) -> str:
    """The Python code block under `### <title>` in the spec."""
    text = SPEC_PATH.read_text(encoding="utf-8")
    start = text.index(f"### {title}")
    block = re.search(r"```python\n(.*?)```", text[start:], re.DOTALL)
    assert block, f"no python block under {title!r} in {SPEC_PATH}"
    return block.group(1)


def run_spec_example(title: str, base_url: str) -> tuple[Any, str, dict[str, Any]]:
    """Run the example unchanged except for its base URL; returns (response, its stdout, body)."""
    code = spec_example(title)
    assert SPEC_BASE_URL in code
    stdout = io.StringIO()
    namespace: dict[str, Any] = {"__name__": "spec_example"}
    with contextlib.redirect_stdout(stdout):
        exec(code.replace(SPEC_BASE_URL, base_url), namespace)  # noqa: S102 - the spec's own example
    response = namespace["response"]
    return response, stdout.getvalue(), json.loads(response.request.body)


def git(workspace: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=workspace, check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


def sandbox_of(state_dir: Path, conversation_id: str) -> dict[str, Any]:
    for task_file in sorted((state_dir / "sandboxes").glob("*/task.json")):
        task = json.loads(task_file.read_text())
        if task["conversation_id"] == conversation_id:
            return dict(task)
    raise AssertionError(f"no sandbox was started for {conversation_id}")


@pytest.fixture
def local_stack(tmp_path: Path) -> Iterator[RunningStack]:
    if not SPEC_PATH.exists():
        pytest.skip(f"the spec is not at {SPEC_PATH} (set CONVERSATION_SPEC)")
    if not AGENT_PYTHON.exists():
        pytest.skip(f"{AGENT_PYTHON} is missing: the sandboxes need openhands-agent-server")
    stack = RunningStack.start(tmp_path / "state", free_port())
    try:
        match = stack.wait_for_line(r"devstack ready: (http://127\.0\.0\.1:\d+)/api", BOOT_TIMEOUT)
        stack.base_url = match.group(1)
        yield stack
    finally:
        stack.kill_everything()


def follow(base_url: str, conversations: list[Created]) -> None:
    """GET each conversation until it is RUNNING or ERROR (or time runs out)."""
    deadline = time.monotonic() + RUNNING_TIMEOUT
    pending = list(conversations)
    while pending and time.monotonic() < deadline:
        for created in list(pending):
            response = requests.get(f"{base_url}/api/conversations/{created.conversation_id}", timeout=10)
            assert response.status_code == 200, response.text
            view = response.json()
            created.view = view
            if view["conversation_status"] in {"RUNNING", "ERROR", "STOPPED"}:
                created.seconds_to_end = time.monotonic() - created.posted_at
                pending.remove(created)
        time.sleep(0.25)


def describe(created: Created) -> str:
    view = created.view or {}
    keys = ("conversation_status", "runtime_status", "error_code", "error_message", "error_details", "timeline")
    return f"{created.label}: " + json.dumps({key: view.get(key) for key in keys}, ensure_ascii=False)


def check_running(stack: RunningStack, created: Created) -> None:
    view = created.view
    assert view is not None and view["conversation_status"] == "RUNNING", describe(created)
    assert view["runtime_status"] == "STATUS$READY"
    assert [entry["phase"] for entry in view["timeline"]] == EVERY_PHASE, describe(created)
    assert view["microagents"] == ["repo"]

    # The workspace: the repository at the selected branch and the commit checked at POST time.
    sandbox = sandbox_of(stack.state_dir, created.conversation_id)
    workspace = Path(sandbox["workspace_root"]) / "repo"
    bare = stack.state_dir / "repos" / "user" / "repo.git"
    branch = view["selected_branch"]
    assert branch == created.request.get("selected_branch", "main")
    assert view["commit"] == git(bare, "rev-parse", f"refs/heads/{branch}")
    assert git(workspace, "rev-parse", "HEAD") == view["commit"]
    checked_out = git(workspace, "rev-parse", "--abbrev-ref", "HEAD")
    # docs/sandbox-protocol.md: with no branch requested the sandbox may work on its own
    # `openhands-workspace-…` branch, created at the same commit.
    assert checked_out == branch or (
        "selected_branch" not in created.request and checked_out.startswith("openhands-workspace-")
    ), checked_out

    # The setup script ran (in the workspace, on that branch and commit).
    marker = workspace / ".openhands_setup_done"
    assert marker.exists(), f"{marker} is missing: the setup script did not run"
    assert marker.read_text().strip() == f"setup.sh ran on branch {checked_out} at commit {view['commit']}"

    # The pre-commit hook is installed and runs the repository's .openhands/pre-commit.sh.
    hook = workspace / ".git" / "hooks" / "pre-commit"
    assert hook.exists() and os.access(hook, os.X_OK), f"{hook} is not installed"
    ran = subprocess.run([str(hook)], cwd=workspace, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0 and "pre-commit: every shell script parses" in ran.stdout, ran.stdout + ran.stderr

    # The agent-server holds the conversation, with the first message when there is one.
    url = view["agent_server_url"]
    port = int(url.rsplit(":", 1)[1])
    assert requests.get(f"{url}/ready", timeout=5).status_code == 200
    pid = agent_server_pid(port)
    assert pid is not None, f"no agent-server process listens on port {port}"
    session_key = environment_variable(pid, "SESSION_API_KEY")
    assert session_key, "the agent-server has no SESSION_API_KEY"
    agent_conversation = f"{url}/api/conversations/{view['agent_conversation_id']}"
    assert requests.get(agent_conversation, timeout=10).status_code == 401  # the key is required
    headers = {"X-Session-API-Key": session_key}
    answer = requests.get(agent_conversation, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert Path(answer.json()["workspace"]["working_dir"]).resolve() == workspace.resolve()
    events = requests.get(f"{agent_conversation}/events/search", headers=headers, params={"limit": 100}, timeout=10)
    assert events.status_code == 200, events.text
    user_messages = [
        event["llm_message"]["content"]
        for event in events.json()["items"]
        if event.get("kind") == "MessageEvent" and event.get("source") == "user"
    ]
    expected_text = created.request.get("initial_user_msg")
    if expected_text is None:
        assert user_messages == []
    else:
        assert user_messages, "the agent-server has no user message"
        first = user_messages[0]
        assert [item.get("text") for item in first if item.get("type") == "text"] == [expected_text]
        images = [url for item in first if item.get("type") == "image" for url in item.get("image_urls", [])]
        assert images == created.request.get("image_urls", [])


def check_broken_setup(stack: RunningStack, created: Created) -> None:
    view = created.view
    assert view is not None and view["conversation_status"] == "ERROR", describe(created)
    assert view["error_code"] == "SETUP_SCRIPT_FAILED", describe(created)
    details = view["error_details"] or {}
    assert details.get("exit_code") == 3, describe(created)
    assert "toolchain 9.9 is not available" in details.get("output_tail", ""), describe(created)
    phases = [entry["phase"] for entry in view["timeline"]]
    assert "STATUS$RUNNING_SETUP_SCRIPT" in phases and "STATUS$STARTING_AGENT_SERVER" not in phases, phases
    # Its sandbox ends (the task is stopped) shortly after.
    deadline = time.monotonic() + 30
    while "exit_code" not in sandbox_of(stack.state_dir, created.conversation_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "exit_code" in sandbox_of(stack.state_dir, created.conversation_id), "the failed sandbox still runs"


def check_api_gateway(stack: RunningStack) -> None:
    """The authorizer path (an issued key, a wrong key) and the documentation routes."""
    settings = f"{stack.base_url}/api/settings"
    api_key = (stack.state_dir / "local-api-key").read_text().strip()
    with_key = requests.get(settings, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert with_key.status_code == 200 and with_key.json()["llm_api_key_set"] is True, with_key.text
    assert with_key.json()["llm_model"] == "openai/placeholder-model-set-LLM_MODEL"
    wrong = requests.get(settings, headers={"Authorization": "Bearer not-a-key"}, timeout=10)
    assert wrong.status_code == 401, wrong.text
    assert wrong.json() == {"status": "error", "message": "Missing or invalid API key", "msg_id": "ERROR$UNAUTHORIZED"}
    docs = requests.get(f"{stack.base_url}/api/docs", timeout=10)
    assert docs.status_code == 200 and "text/html" in docs.headers["Content-Type"]
    openapi = requests.get(f"{stack.base_url}/api/openapi.json", timeout=10)
    assert openapi.status_code == 200 and "/api/conversations" in openapi.json()["paths"]


def started_processes(stack: RunningStack) -> set[ProcessIdentity]:
    """Everything the stack runs: its process tree, plus what left the tree (tmux servers)."""
    return identify(descendants(stack.process.pid) | processes_using(stack.state_dir))


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """On the terminal even without -s (timings are reported, not asserted)."""
    with capsys.disabled():
        print(line)


def test_local_stack_end_to_end(local_stack: RunningStack, capsys: pytest.CaptureFixture[str]) -> None:
    stack = local_stack
    created: list[Created] = []

    for label, title in (("minimal", "最小化配置示例"), ("full", "完整配置示例")):
        posted_at = time.monotonic()
        response, stdout, body = run_spec_example(title, stack.base_url)
        assert response.status_code == 200, f"{label}: {response.status_code} {response.text}\n{stdout}"
        data = response.json()
        assert CONVERSATION_ID.match(data["conversation_id"]), data
        assert data["conversation_status"] == "STARTING", data
        assert f"会话创建成功: {data['conversation_id']}" in stdout, stdout
        created.append(Created(label, body, data["conversation_id"], posted_at, stdout))

    check_api_gateway(stack)

    broken_request = {"repository": "user/broken-setup"}
    posted_at = time.monotonic()
    response = requests.post(f"{stack.base_url}/api/conversations", json=broken_request, timeout=30)
    assert response.status_code == 200, response.text
    broken = Created("broken-setup", broken_request, response.json()["conversation_id"], posted_at)

    follow(stack.base_url, [*created, broken])
    for item in (*created, broken):
        status = (item.view or {}).get("conversation_status")
        seconds = f"{item.seconds_to_end:.1f} s" if item.seconds_to_end is not None else "timed out"
        report(capsys, f"e2e: {item.label} {item.conversation_id[:8]} POST -> {status}: {seconds}")

    running_processes = started_processes(stack)
    try:
        for item in created:
            check_running(stack, item)
        check_broken_setup(stack, broken)
    except AssertionError:
        print(stack.output())
        raise

    # Ctrl-C: every process the stack started ends with it.
    running_processes |= started_processes(stack)
    assert any("openhands.agent_server" in process.command for process in running_processes)
    assert stack.interrupt(SHUTDOWN_TIMEOUT) == 0, stack.output()
    deadline = time.monotonic() + LEFTOVER_GRACE
    alive = [process for process in running_processes if process.is_alive()]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [process for process in alive if process.is_alive()]
    assert not alive, "still running after Ctrl-C:\n" + "\n".join(f"{p.pid} {p.command}" for p in alive)
    assert not identify(processes_using(stack.state_dir)), "processes still use the state directory"
    assert "devstack stopped" in stack.output()
