"""Real counterparts of the sandbox for tests: control plane, git servers, repositories.

Nothing here imitates the code under test: the control-plane double is the other side of
docs/sandbox-protocol.md, and the git servers are ``git daemon`` and ``git http-backend``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack.sandbox_users import UidPair, allocate_uid_pair
from devstack.sandbox_view import python_installation, view_command
from devstack.serving import first_match, served_in_thread

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_DIR = REPO_ROOT / "sandbox"
AGENT_VENV_PYTHON = REPO_ROOT / ".venv-agent" / "bin" / "python"
GIT_IDENTITY = ["-c", "user.name=Test Author", "-c", "user.email=author@example.com"]
# The test reads workspaces the sandbox handed to its agent user (another uid).
SAFE_DIRECTORIES = ["-c", "safe.directory=*"]
SEPARATED = os.geteuid() == 0
"""Run as root, the bootstrap separates its children: each run gets its own uid pair."""

Event = dict[str, Any]


# --- processes and ports ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def process_is_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in {"Z", "X"}


def processes_inside(directory: Path) -> list[str]:
    """Live processes whose working directory or command line is under ``directory``."""
    found = []
    marker = str(directory)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (cwd.startswith(marker) or marker in cmdline) and process_is_alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline.strip()} (cwd {cwd})")
    return found


def git(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *SAFE_DIRECTORIES, *args],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


# --- repositories -------------------------------------------------------------------------


@dataclass
class SourceRepo:
    """A repository with ``main`` and ``feature`` branches, the origin of clones."""

    path: Path
    commits: dict[str, str] = field(default_factory=dict)

    def commit_files(self, label: str, files: Mapping[str, str], *, executable: bool = False) -> str:
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            if executable:
                target.chmod(0o755)
        git("add", "-A", cwd=self.path)
        git(*GIT_IDENTITY, "commit", "-q", "--allow-empty", "-m", label, cwd=self.path)
        self.commits[label] = git("rev-parse", "HEAD", cwd=self.path)
        return self.commits[label]


def make_source_repo(parent: Path, name: str = "demo", feature_files: Mapping[str, str] | None = None) -> SourceRepo:
    """main: ``m1`` -> ``m2``; feature (from m1): ``f1`` (with ``feature_files``) -> ``f2``."""
    path = parent / name
    git("init", "-q", "-b", "main", str(path), cwd=parent)
    repo = SourceRepo(path)
    repo.commit_files("m1", {"README.md": "demo\n"})
    git("checkout", "-q", "-b", "feature", cwd=path)
    repo.commit_files("f1", {"feature.txt": "one\n", **(feature_files or {})})
    repo.commit_files("f2", {"feature.txt": "two\n"})
    git("checkout", "-q", "main", cwd=path)
    repo.commit_files("m2", {"README.md": "demo 2\n"})
    return repo


# --- git servers --------------------------------------------------------------------------


@contextmanager
def git_daemon(base_path: Path) -> Iterator[str]:
    """``git daemon`` exporting every repository under ``base_path``; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            f"--base-path={base_path}",
            "--export-all",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        yield f"git://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


class _GitHttpHandler(BaseHTTPRequestHandler):
    """Smart HTTP through ``git http-backend``, behind HTTP Basic authentication."""

    server: GitHttpServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        self.server.authorizations.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != self.server.expected_authorization:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self._read_body()
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "tester",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=30, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class GitHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, username: str, password: str) -> None:
        super().__init__(("127.0.0.1", 0), _GitHttpHandler)
        self.root = root
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.expected_authorization = f"Basic {token}"
        self.authorizations: list[str | None] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def git_http_server(root: Path, username: str, password: str) -> Iterator[GitHttpServer]:
    with served_in_thread(GitHttpServer(root, username, password)) as server:
        yield server


# --- the control plane --------------------------------------------------------------------


class _ControlPlaneHandler(BaseHTTPRequestHandler):
    server: ControlPlaneDouble

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path, _, query = self.path.partition("?")
        if path == "/sandbox/v1/context":
            self._answer(200, self.server.context)
        elif path == "/sandbox/v1/inbox":
            wait = float(urllib.parse.parse_qs(query).get("wait", ["0"])[0])
            self._answer(*self.server.poll_inbox(min(wait, 20.0)))
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        if not self._authorized():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"null")
        path = self.path
        if path == "/sandbox/v1/events":
            status = self.server.record(body)
            self._answer(status, {"status": "ok"} if status == 200 else {"error": "conflict"})
        elif path == "/sandbox/v1/agent-events":
            self._answer(*self.server.store_agent_events(body["events"]))
        elif path == "/sandbox/v1/agent-conversation":
            self._answer(*self.server.store_agent_status(body))
        elif path == "/sandbox/v1/workspace":
            self._answer(*self.server.store_workspace(body))
        elif path.startswith("/sandbox/v1/inbox/") and path.endswith("/ack"):
            item_id = urllib.parse.unquote(path.removeprefix("/sandbox/v1/inbox/").removesuffix("/ack"))
            self._answer(*self.server.ack(item_id))
        else:
            self._answer(404, {"error": "not found"})

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.server.token}":
            return True
        self._answer(401, {"error": "unauthorized"})
        return False

    def _answer(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sandbox ended while a long poll was open


FAILURE = (500, {"status": "error", "message": "injected failure"})


class ControlPlaneDouble(ThreadingHTTPServer):
    """Serves one conversation's context and records its events; the other side of the channel
    to a running conversation (agent events and status, inbox, workspace) as CONTRACTS.md says.

    ``stop_at_phase``: answer 409 from that phase event on (the conversation was stopped
    meanwhile), which ends a bootstrap right before it does that phase.
    ``fail_share``: per channel (``agent-events``, ``agent-conversation``, ``inbox``, ``ack``,
    ``workspace``), the share of calls answered 500; half of the failed writes are stored
    before the 500 (the answer is lost, not the write), as a real outage may do.
    """

    daemon_threads = True

    def __init__(self, token: str, context: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _ControlPlaneHandler)
        self.token = token
        self.context = context
        self.stop_at_phase: str | None = None
        self.reject_heartbeats = False
        self.events: list[Event] = []
        self.agent_events: dict[str, Event] = {}
        self.agent_event_arrivals: list[str] = []
        self.agent_statuses: list[dict[str, Any]] = []
        self.workspaces: list[dict[str, Any]] = []
        self.inbox: list[dict[str, Any]] = []
        self.acknowledged: set[str] = set()
        self.fail_share: dict[str, float] = {}
        self.event_limit: int | None = None
        """Past this many stored events, agent-events answer 413 SANDBOX$EVENT_LIMIT_REACHED."""
        self.failures: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._random = random.Random(12)
        self._changed = threading.Condition()
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/sandbox"

    def record(self, event: Event) -> int:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()
            if event.get("type") == "phase" and event.get("phase") == self.stop_at_phase:
                self._stopped = True
            if self._stopped or (self.reject_heartbeats and event.get("type") == "heartbeat"):
                return 409
            return 200

    # --- the channel --------------------------------------------------------------------------

    def _fails(self, channel: str) -> tuple[bool, bool]:
        """(answer 500, store first) for this call of ``channel``; under the lock."""
        self.calls[channel] = self.calls.get(channel, 0) + 1
        if self._random.random() >= self.fail_share.get(channel, 0.0):
            return False, True
        self.failures[channel] = self.failures.get(channel, 0) + 1
        return True, self._random.random() < 0.5

    def store_agent_events(self, events: list[Event]) -> tuple[int, Any]:
        with self._changed:
            fail, store = self._fails("agent-events")
            if self.event_limit is not None and len(self.agent_events) + len(events) > self.event_limit:
                return 413, {"status": "error", "message": "full", "msg_id": "SANDBOX$EVENT_LIMIT_REACHED"}
            stored = 0
            if store:
                for event in events:
                    if event["id"] not in self.agent_events:
                        self.agent_event_arrivals.append(event["id"])
                        stored += 1
                    self.agent_events[event["id"]] = event
                self._changed.notify_all()
            return FAILURE if fail else (200, {"status": "ok", "stored": stored})

    def store_agent_status(self, info: dict[str, Any]) -> tuple[int, Any]:
        with self._changed:
            fail, store = self._fails("agent-conversation")
            if store:
                self.agent_statuses.append(info)
                self._changed.notify_all()
            return FAILURE if fail else (200, {"status": "ok"})

    def store_workspace(self, report: dict[str, Any]) -> tuple[int, Any]:
        with self._changed:
            fail, store = self._fails("workspace")
            if store:
                self.workspaces.append(report)
                self._changed.notify_all()
            return FAILURE if fail else (200, {"status": "ok"})

    def push(self, item: dict[str, Any]) -> str:
        """Queue an inbox item (``{"kind": "message", "text": ...}`` or a confirmation); its id."""
        with self._changed:
            item_id = f"item-{len(self.inbox) + 1:04d}"
            self.inbox.append({"item_id": item_id, **item})
            self._changed.notify_all()
            return item_id

    def poll_inbox(self, wait: float) -> tuple[int, Any]:
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                pending = [item for item in self.inbox if item["item_id"] not in self.acknowledged]
                remaining = deadline - time.monotonic()
                if pending or remaining <= 0:
                    break
                self._changed.wait(remaining)
            fail, _ = self._fails("inbox")
            return FAILURE if fail else (200, {"items": pending})

    def ack(self, item_id: str) -> tuple[int, Any]:
        with self._changed:
            fail, store = self._fails("ack")
            if store:
                self.acknowledged.add(item_id)
                self._changed.notify_all()
            return FAILURE if fail else (200, {"status": "ok"})

    def agent_transcript(self) -> list[Event]:
        """Stored agent events as the service orders them: by timestamp, then arrival."""
        with self._changed:
            arrival = {event_id: index for index, event_id in enumerate(self.agent_event_arrivals)}
            return sorted(self.agent_events.values(), key=lambda e: (e["timestamp"], arrival[e["id"]]))

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out waiting for {what}")
                self._changed.wait(min(remaining, 0.5))

    def phases(self) -> list[str]:
        return [e["phase"] for e in list(self.events) if e.get("type") == "phase"]

    def of_type(self, kind: str) -> list[Event]:
        return [e for e in list(self.events) if e.get("type") == kind]

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float) -> Event:
        return first_match(
            self._changed, self.events, predicate, timeout, lambda: f"no matching event; got {self.events}"
        )


@contextmanager
def control_plane(token: str, context: dict[str, Any]) -> Iterator[ControlPlaneDouble]:
    with served_in_thread(ControlPlaneDouble(token, context)) as server:
        yield server


# --- running the bootstrap ----------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    token: str
    llm_key: str
    git_password: str
    session_key: str

    def all(self) -> list[str]:
        return [self.token, self.llm_key, self.git_password, self.session_key]

    @classmethod
    def random(cls) -> Secrets:
        """Real values, random for each test: what a leak would carry."""
        return cls(
            token="tok_" + secrets.token_hex(16),
            llm_key="sk-llm-" + secrets.token_hex(16),
            git_password="ghp_" + secrets.token_hex(16),
            session_key="sess_" + secrets.token_hex(16),
        )


def make_context(
    conversation_id: str,
    secrets: Secrets,
    *,
    repository: dict[str, Any] | None,
    workspace_branch: str | None = None,
    first_message: str | None = "Fix the flaky test",
    setup_script_timeout_seconds: float = 600,
) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "repository": repository,
        "workspace_branch": workspace_branch,
        "agent": {
            "agent": "CodeActAgent",
            "max_iterations": 100,
            "confirmation_mode": False,
            "security_analyzer": None,
        },
        "llm": {
            "model": "openai/gpt-4o-mini",
            "api_key": secrets.llm_key,
            # Nothing listens there: the agent never reaches a real LLM.
            "base_url": f"http://127.0.0.1:{free_port()}/v1",
        },
        "session_api_key": secrets.session_key,
        "first_message": None if first_message is None else {"text": first_message, "image_urls": []},
        "conversation_instructions": None,
        "mcp_config": {},
        "setup_script_timeout_seconds": setup_script_timeout_seconds,
    }


def repository_context(
    clone_url: str,
    commit: str,
    *,
    branch: str | None,
    name: str = "demo",
    password: str | None = None,
) -> dict[str, Any]:
    return {
        "clone_url": clone_url,
        "name": name,
        "branch": branch,
        "commit": commit,
        "username": "x-access-token",
        "password": password,
    }


def bootstrap_environment(
    *,
    conversation_id: str,
    api_url: str,
    token: str,
    workspace_root: Path,
    scratch: Path,
    extra: Mapping[str, str] | None = None,
    uid_pairs: list[UidPair] | None = None,
) -> dict[str, str]:
    """The task environment of docs/sandbox-protocol.md, isolated in ``scratch``.

    Run as root, with a uid pair of its own (added to ``uid_pairs``, by default the pairs
    ``release_uid_pairs`` ends after each test) and its private directories under
    ``scratch/runtime``, as devstack gives a task.
    """
    home = scratch / "home"
    tmp = scratch / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    runtime = scratch / "runtime"
    runtime.mkdir(mode=0o711, exist_ok=True)
    (scratch / "slash-tmp").mkdir(exist_ok=True)
    (scratch / "slash-tmp").chmod(0o1777)  # the sandbox's own /tmp, as a container has
    separation: dict[str, str] = {}
    if SEPARATED:
        # pytest makes each test's directory 0700: the sandbox's users must pass through it.
        for directory in {workspace_root.parent, scratch.parent, scratch}:
            directory.chmod(0o711)
        pair = allocate_uid_pair()
        (UID_PAIRS if uid_pairs is None else uid_pairs).append(pair)
        separation = pair.environment()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SANDBOX_", "GIT_", "AGENT_SERVER_", "PYTEST_"))
    }
    env.update(
        {
            "PYTHONPATH": str(SANDBOX_DIR),
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "GIT_CONFIG_NOSYSTEM": "1",
            "CONVERSATION_ID": conversation_id,
            "SANDBOX_API_URL": api_url,
            "SANDBOX_TOKEN": token,
            "WORKSPACE_ROOT": str(workspace_root),
            "AGENT_SERVER_HOST": "127.0.0.1",
            "AGENT_SERVER_PORT": str(free_port()),
            "HEARTBEAT_SECONDS": "0.2",
            "SANDBOX_RUNTIME_DIR": str(runtime),
            **separation,
        }
    )
    env.update(extra or {})
    return env


UID_PAIRS: list[UidPair] = []


def release_uid_pairs(since: int = 0) -> None:
    """Kill whatever runs as the uids handed out after the first ``since``, and free them."""
    while len(UID_PAIRS) > since:
        UID_PAIRS.pop().end()


def bootstrap_command(env: Mapping[str, str], exposed_too: Sequence[Path] = ()) -> list[str]:
    """``python -m openhands_sandbox.bootstrap`` in the filesystem view devstack gives a sandbox
    (with ``exposed_too`` visible as well)."""
    exposed = [
        *exposed_too,
        Path(env["WORKSPACE_ROOT"]).parent,
        Path(env["SANDBOX_RUNTIME_DIR"]),
        Path(env.get("TEST_OUTPUT_DIR") or env["SANDBOX_RUNTIME_DIR"]),
        SANDBOX_DIR,
        Path(sys.executable).parents[1],
        python_installation(sys.executable),
    ]
    agent_python = env.get("AGENT_SERVER_PYTHON")
    if agent_python:
        exposed += [Path(agent_python).parents[1], python_installation(agent_python)]
    private_tmp = Path(env["SANDBOX_RUNTIME_DIR"]).parent / "slash-tmp"
    return [*view_command(exposed, private_tmp), sys.executable, "-m", "openhands_sandbox.bootstrap"]


def run_bootstrap(
    env: Mapping[str, str], timeout: float = 60, exposed_too: Sequence[Path] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bootstrap_command(env, exposed_too),
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_bootstrap(env: Mapping[str, str], stderr_path: Path) -> subprocess.Popen[bytes]:
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(
            bootstrap_command(env),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def log_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
