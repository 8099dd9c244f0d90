"""`convo` against the real local stack (`python -m devstack`): one conversation to RUNNING, one to ERROR.

Boots the stack on free ports with its own state directory, runs the installed `convo` as a user
would, then stops the stack with SIGINT (Ctrl-C) and checks that nothing it started still runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.client.conftest import installed_convo

pytestmark = [pytest.mark.e2e, pytest.mark.agent_server, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
READY_PREFIX = "devstack ready: "
BOOT_SECONDS = 240
STOP_SECONDS = 60
CONVO_SECONDS = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalStack:
    process: subprocess.Popen[str]
    state_dir: Path
    port: int
    output: list[str] = field(default_factory=list)
    api_url: str = ""

    def log(self) -> str:
        return "".join(self.output[-80:])


def _read_output(stack: LocalStack, ready: threading.Event) -> None:
    assert stack.process.stdout is not None
    for line in stack.process.stdout:
        stack.output.append(line)
        if line.startswith(READY_PREFIX):
            stack.api_url = line[len(READY_PREFIX) :].strip()
            ready.set()


@contextmanager
def local_stack(state_dir: Path) -> Iterator[LocalStack]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--port", str(port), "--state-dir", str(state_dir), "--pool", "0"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C reaches it alone, and a leftover is findable
    )
    stack = LocalStack(process, state_dir, port)
    ready = threading.Event()
    reader = threading.Thread(target=_read_output, args=(stack, ready), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + BOOT_SECONDS
        while not ready.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the local stack did not become ready (exit {process.poll()}):\n{stack.log()}")
        yield stack
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the test failed before its own clean stop
            process.wait(timeout=10)
        for pid in processes_left_by(stack):
            os.kill(pid, signal.SIGKILL)
        reader.join(timeout=5)


def processes_left_by(stack: LocalStack) -> list[int]:
    """Live processes in the stack's process group, or whose directory, command or environment
    names its state directory (sandboxes run in sessions of their own there)."""
    marker = str(stack.state_dir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, _parent, group = stat.rsplit(")", 1)[1].split()[:3]
            if state == "Z":
                continue
            cwd = os.readlink(entry / "cwd")
            described = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
        if int(group) == stack.process.pid or cwd.startswith(marker) or marker.encode() in described:
            found.append(int(entry.name))
    return found


def convo(stack: LocalStack, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(installed_convo()), *arguments],
        env={**os.environ, "CONVO_ENDPOINT": stack.api_url},
        capture_output=True,
        text=True,
        timeout=CONVO_SECONDS,
        check=False,
    )


def test_convo_creates_on_the_local_stack_and_the_stack_stops_clean(tmp_path: Path) -> None:
    with local_stack(tmp_path / "state") as stack:
        assert stack.api_url == f"http://127.0.0.1:{stack.port}/api"

        running = convo(
            stack,
            "create",
            "--repo",
            "https://github.com/user/repo.git",
            "--branch",
            "develop",
            "--message",
            "hi",
            "--wait",
            "--poll-interval",
            "0.5",
        )
        assert running.returncode == 0, f"{running.stdout}\n{running.stderr}\n{stack.log()}"
        lines = running.stdout.splitlines()
        assert lines[0].endswith("https://github.com/user/repo.git @ develop")
        for label in ("Queued", "Starting runtime", "Running setup script", "Starting agent server"):
            assert any(label in line for line in lines), f"{label!r} missing:\n{running.stdout}"
        assert lines[-1].startswith("RUNNING after ")

        conversation_id = lines[0].split()[1]
        shown = convo(stack, "show", conversation_id, "--json")
        assert shown.returncode == 0
        assert '"conversation_status": "RUNNING"' in shown.stdout
        assert '"selected_branch": "develop"' in shown.stdout

        failing = convo(stack, "create", "--repo", "user/broken-setup", "--message", "hi", "--wait")
        assert failing.returncode == 1, f"{failing.stdout}\n{failing.stderr}\n{stack.log()}"
        assert "ERROR SETUP_SCRIPT_FAILED after " in failing.stdout
        assert "Running setup script failed after " in failing.stdout
        assert "exit code 3" in failing.stdout

        listed = convo(stack, "list")
        assert listed.returncode == 0
        assert conversation_id in listed.stdout

        # The check below sees the stack, and the sandbox of the RUNNING one in its own session.
        alive = processes_left_by(stack)
        assert stack.process.pid in alive
        assert any(os.getpgid(pid) != stack.process.pid for pid in alive), "no sandbox process found"

        stack.process.send_signal(signal.SIGINT)
        assert stack.process.wait(timeout=STOP_SECONDS) == 0, stack.log()
        assert "devstack stopped" in stack.log()
        assert processes_left_by(stack) == []
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", stack.port)) != 0, "the API port still answers"
