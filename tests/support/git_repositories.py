"""Real git repositories, and git servers on loopback: dulwich's smart HTTP, and one that never answers."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from dulwich.repo import Repo
from dulwich.server import DictBackend
from dulwich.web import make_wsgi_chain


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
            "HOME": str(cwd),
            "PATH": "/usr/bin:/bin",
        },
    ).stdout.strip()


def git_branch_oracle(directory: Path) -> Callable[[str], bool]:
    """Whether git itself accepts a branch name: `git check-ref-format --branch` run inside an
    empty repository at `directory`, with no user or system config."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(directory)], check=True, env=env)

    def git_accepts(name: str) -> bool:
        result = subprocess.run(
            ["git", "check-ref-format", "--branch", name], cwd=directory, env=env, capture_output=True
        )
        return result.returncode == 0

    return git_accepts


def make_repository(path: Path, branches: tuple[str, ...] = ("main",)) -> dict[str, str]:
    """A real git repository with one commit per branch; returns branch -> commit sha."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branches[0])
    (path / "README.md").write_text("hello\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "initial")
    commits = {branches[0]: git(path, "rev-parse", "HEAD")}
    for branch in branches[1:]:
        git(path, "checkout", "-q", "-b", branch)
        (path / f"{branch.replace('/', '_')}.txt").write_text(branch)
        git(path, "add", ".")
        git(path, "commit", "-q", "-m", branch)
        commits[branch] = git(path, "rev-parse", "HEAD")
    git(path, "checkout", "-q", branches[0])
    return commits


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def smart_http_git_server(
    repositories: dict[str, Path], middleware: Callable[[Any], Any] | None = None
) -> Iterator[str]:
    """dulwich's smart-HTTP git server on 127.0.0.1; yields the base URL (`http://127.0.0.1:port`).

    `repositories` maps a URL path (e.g. "/owner/repo.git") to a repository directory;
    `middleware` wraps the WSGI application (to demand credentials, say).
    """
    backend = DictBackend({path: Repo(str(directory)) for path, directory in repositories.items()})
    app = make_wsgi_chain(backend)
    server: WSGIServer = make_server(
        "127.0.0.1", 0, middleware(app) if middleware else app, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts TCP connections on 127.0.0.1 and never says a word; yields `http://127.0.0.1:port`."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        listener.close()
