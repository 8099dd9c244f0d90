"""Driving `python -m devstack` from a test: start it, read its output, find its processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_PYTHON = REPO_ROOT / ".venv-agent" / "bin" / "python"
# Variables the stack must not inherit from the test process: it sets its own fake AWS
# credentials, and the LLM settings are under test (placeholders when unset).
_NOT_INHERITED = re.compile(r"^(AWS_|LLM_|POWERTOOLS_|MOTO_)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class ProcessIdentity:
    """A pid plus its start time, so a reused pid is not mistaken for the process we saw."""

    pid: int
    start_ticks: int
    command: str

    def is_alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[1] not in {"Z", "X"} and stat[2] == self.start_ticks


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time in clock ticks) from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], int(fields[19])


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def identify(pids: Iterable[int]) -> set[ProcessIdentity]:
    found = set()
    for pid in pids:
        stat = _stat(pid)
        if stat is not None and stat[1] not in {"Z", "X"}:
            found.add(ProcessIdentity(pid, stat[2], _command(pid)))
    return found


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        stat = _stat(pid)
        if stat is not None:
            children.setdefault(stat[0], []).append(pid)
    found: set[int] = set()
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def processes_using(directory: Path) -> set[int]:
    """Processes whose environment, command line or working directory mentions `directory`:
    the sandboxes (their HOME, TMPDIR and WORKSPACE_ROOT are in the state directory) and
    everything they started, including what left their process tree (tmux servers)."""
    marker = str(directory)
    found = set()
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if cwd.startswith(marker) or marker in _command(pid) or marker.encode() in _environ(pid):
            found.add(pid)
    return found


def agent_server_pid(port: int) -> int | None:
    for pid in all_pids():
        command = _command(pid)
        if "openhands.agent_server" in command and f"--port {port}" in command:
            return pid
    return None


def environment_variable(pid: int, name: str) -> str | None:
    prefix = f"{name}=".encode()
    for variable in _environ(pid).split(b"\0"):
        if variable.startswith(prefix):
            return variable[len(prefix) :].decode()
    return None


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    state_dir: Path
    lines: list[str] = field(default_factory=list)
    base_url: str = ""
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @classmethod
    def start(
        cls,
        state_dir: Path,
        port: int,
        environment_extra: dict[str, str] | None = None,
        arguments: tuple[str, ...] = (),
        pool: int = 0,
    ) -> RunningStack:
        """`python -m devstack` on `port`; `environment_extra` (e.g. the LLM_* settings) and `arguments`
        (devstack flags) are added to what it gets. `pool`: warm sandboxes to keep (0 unless the test
        is about the pool: CPU is scarce)."""
        environment = {key: value for key, value in os.environ.items() if not _NOT_INHERITED.match(key)}
        environment["PYTHONUNBUFFERED"] = "1"
        environment.update(environment_extra or {})
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "devstack", "--port", str(port), "--state-dir", str(state_dir)),
                *("--pool", str(pool), *arguments),
            ],
            cwd=REPO_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a Ctrl-C meant for pytest does not reach it: the test signals it
        )
        stack = cls(process, state_dir)
        threading.Thread(target=stack._read_output, name="devstack-output", daemon=True).start()
        return stack

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and seen == len(self.lines)):
                    raise AssertionError(f"no line matching {pattern!r}; output so far:\n{self.output()}")
                self._changed.wait(min(remaining, 0.5))

    def output(self) -> str:
        return "\n".join(self.lines)

    def interrupt(self, timeout: float) -> int:
        """Ctrl-C, as a person at the terminal would; returns the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def kill_everything(self) -> None:
        """Last resort after a failed test: nothing of this stack may outlive it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for _ in range(5):
            leftovers = processes_using(self.state_dir)
            if not leftovers:
                return
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
