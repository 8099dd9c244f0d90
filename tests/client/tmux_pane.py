"""A command running in a real terminal: a detached tmux session on a private server, read with capture-pane."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import pytest

EXIT_MARKER = "convo exited with "


def require_tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed (Debian package `tmux`: apt-get install -y tmux)")
    return tmux


class TmuxPane:
    def __init__(self, tmux: str, socket_path: str, session: str) -> None:
        self._tmux = tmux
        self._socket = socket_path
        self.session = session

    def _run(self, *arguments: str) -> str:
        completed = subprocess.run(
            [self._tmux, "-S", self._socket, *arguments], capture_output=True, text=True, timeout=10, check=True
        )
        return completed.stdout

    def capture(self) -> str:
        """What the screen shows now (trailing blank lines dropped)."""
        return self._run("capture-pane", "-p", "-t", self.session).rstrip("\n")

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        screen = self.capture()
        while not condition(screen):
            if time.monotonic() > deadline:
                raise AssertionError(f"the terminal never showed {what}; it shows:\n{screen}")
            time.sleep(0.05)
            screen = self.capture()
        return screen

    def type_text(self, text: str) -> None:
        """Keys typed as a person would (no Enter)."""
        self._run("send-keys", "-t", self.session, "-l", text)

    def type_line(self, text: str) -> None:
        self.type_text(text)
        self._run("send-keys", "-t", self.session, "Enter")

    def exit_code(self, timeout: float = 15.0) -> int:
        screen = self.wait_for(lambda text: EXIT_MARKER in text, "the command's exit", timeout)
        return int(screen.split(EXIT_MARKER, 1)[1].split()[0])


@contextmanager
def command_in_terminal(
    argv: list[str], env: Mapping[str, str], width: int = 120, height: int = 30
) -> Iterator[TmuxPane]:
    """`tmux new-session -d -x W -y H 'ARGV'` on a server of its own (its socket in a directory removed
    afterwards); the pane stays after the command ends, so its last screen can be read."""
    tmux = require_tmux()
    socket_directory = tempfile.mkdtemp(prefix="convo-tmux-")  # short: a socket path has ~100 bytes at most
    socket_path = os.path.join(socket_directory, "socket")
    session = "convo"
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    shell = f"env {assignments} {shlex.join(argv)}; status=$?; echo; echo {EXIT_MARKER}$status; sleep 600"
    try:
        subprocess.run(
            [
                tmux,
                "-u",
                "-S",
                socket_path,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                str(width),
                "-y",
                str(height),
                "-s",
                session,
                shell,
            ],
            check=True,
            timeout=10,
            env={"PATH": "/usr/bin:/bin", "TERM": "xterm-256color", "LANG": "C.UTF-8"},
        )
        yield TmuxPane(tmux, socket_path, session)
    finally:
        subprocess.run([tmux, "-S", socket_path, "kill-server"], check=False, timeout=10, capture_output=True)
        shutil.rmtree(socket_directory, ignore_errors=True)
