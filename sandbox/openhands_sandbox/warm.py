"""A warm pool sandbox: boot the agent-server before any conversation exists, then wait for one.

The task starts with a pool credential (`SANDBOX_POOL_ID`, `SANDBOX_POOL_TOKEN_CIPHERTEXT`: sealed
for the task role as the sandbox token is, opened with one KMS Decrypt before anything else runs;
`SANDBOX_POOL_TOKEN` in clear for tests and hand runs) instead of a conversation's token.
Holding nothing of any conversation, it:

1. boots the agent-server as a cold sandbox does first thing (`Bootstrap.boot_agent_server`: a
   session key of its own, no conversation, the workspace root as its default workspace) and
   waits for it (the 13 s of importing the SDK and litellm), then warms it up: requests through
   its conversation routes, and one throwaway conversation (`warm_up_a_conversation`) that
   makes the first real one as quick to create as a second;
2. reports `idle` (`POST /v1/pool/idle`), then long-polls `GET /v1/pool/assignment`, which is
   all its credential opens, while checking that the agent-server is still alive;
3. on an assignment (the environment a cold task would have had: `CONVERSATION_ID`,
   `SANDBOX_API_URL`, its token), forgets the pool credential and runs exactly as a cold sandbox
   (`bootstrap.run_conversation`): context, clone, setup, hooks, conversation, `ready`, except
   that the agent-server is already up. `ready` carries the session key so the service can
   record it. It never returns to the pool.

A 410 (retired) or 401 ends it; so does the agent-server dying (its task stops, the service marks
it dead and starts another).

`SANDBOX_IDLE_NICENESS` (optional; the local stack sets it, a Fargate task needs none): the
niceness the idle sandbox boots and waits at, and its agent-server with it. On Fargate each task
has its vCPUs to itself; on one machine an idle sandbox's boot would otherwise take CPU from the
conversations starting and running beside it. On assignment the bootstrap's and the agent-server's
process groups (every thread of each) go back to the niceness the task started with.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import secrets
import shutil
import socket
import sys
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openhands_sandbox import task_token
from openhands_sandbox.agent_server import SESSION_KEY_HEADER, AgentServer
from openhands_sandbox.bootstrap import BootedAgentServer, Bootstrap, ExitCode, run_conversation
from openhands_sandbox.control_plane import ControlPlaneClient, ControlPlaneRejected, ControlPlaneUnavailable
from openhands_sandbox.errors import ErrorCode, SandboxFailure, StopRequested
from openhands_sandbox.http_client import http_request, is_http_url, open_http
from openhands_sandbox.lifecycle import StopController, install_stop_signal_handlers
from openhands_sandbox.logs import Redactor, configure_logging, fields
from openhands_sandbox.settings import SandboxSettings, SettingsError
from openhands_sandbox.users import private_directory

log = logging.getLogger("openhands_sandbox.warm")

POOL_ID_VARIABLE = "SANDBOX_POOL_ID"
IDLE_NICENESS_VARIABLE = "SANDBOX_IDLE_NICENESS"
ASSIGNMENT_WAIT_SECONDS = 20.0
"""The long poll's `wait` (the service caps it at 20 s)."""
IDLE_CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class PoolCredential:
    sandbox_id: str
    api_url: str
    credential: str = field(repr=False)

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> PoolCredential:
        """Take the pool credential (and what opened it) out of ``environ`` (no child inherits it)."""
        credential = environ.pop("SANDBOX_POOL_TOKEN", "")
        sandbox_id = environ.pop(POOL_ID_VARIABLE, "")
        if task_token.POOL_CIPHERTEXT_VARIABLE in environ or not credential:
            try:
                credential = task_token.consume_pool_credential(environ, sandbox_id)
            except task_token.TaskTokenError as error:
                raise SettingsError(f"the pool credential could not be opened: {error}") from None
        if not credential or not sandbox_id or not credential.startswith(f"{sandbox_id}."):
            raise SettingsError("SANDBOX_POOL_ID and SANDBOX_POOL_TOKEN must be set and belong together")
        api_url = environ.get("SANDBOX_API_URL", "").rstrip("/")
        if not is_http_url(api_url):
            raise SettingsError("SANDBOX_API_URL must be an http(s) URL")
        return cls(sandbox_id, api_url, credential)


def idle_settings(environ: MutableMapping[str, str]) -> SandboxSettings:
    """The task's settings read as a cold sandbox reads them (agent-server placement, uids,
    directories), before there is a conversation: placeholders stand for its id and token."""
    placeholders = {"CONVERSATION_ID": "0" * 32, "SANDBOX_TOKEN": f"no-conversation-yet-{secrets.token_hex(16)}"}
    return SandboxSettings.from_environ({**environ, **placeholders})


class PoolClient(ControlPlaneClient):
    """The pool endpoints of the sandbox API, with the pool credential."""

    def report_idle(self, boot_seconds: float) -> None:
        self._call("POST", "/v1/pool/idle", {"type": "idle", "boot_seconds": round(boot_seconds, 3)}, 4)

    def wait_for_assignment(self, wait_seconds: float) -> dict[str, str] | None:
        answer = self._call("GET", f"/v1/pool/assignment?wait={wait_seconds:g}", None, 2, timeout=wait_seconds + 15)
        assignment = answer.get("assignment") if isinstance(answer, dict) else None
        if assignment is None:
            return None
        if not isinstance(assignment, dict) or not all(isinstance(v, str) for v in assignment.values()):
            raise ControlPlaneUnavailable("the pool assignment is not a map of strings")
        return {str(key): value for key, value in assignment.items()}


def assignment_environment(assignment: dict[str, str]) -> dict[str, str]:
    """What of an assignment becomes the environment: the conversation's id and the sandbox
    variables a cold task gets from RunTask (never the pool's own, nothing else)."""
    return {
        name: value
        for name, value in assignment.items()
        if name == "CONVERSATION_ID" or (name.startswith("SANDBOX_") and not name.startswith("SANDBOX_POOL_"))
    }


def run_pool_sandbox(environ: MutableMapping[str, str]) -> int:
    try:
        pool = PoolCredential.from_environ(environ)
        settings = idle_settings(environ)
    except SettingsError as error:
        print(f"openhands-sandbox: {error}", file=sys.stderr)
        return ExitCode.FAILED
    redactor = Redactor([pool.credential])
    configure_logging(pool.sandbox_id, redactor)
    assigned_niceness = yield_cpu_while_idle(environ.pop(IDLE_NICENESS_VARIABLE, ""))
    stop = StopController()
    install_stop_signal_handlers(stop)
    client = PoolClient(pool.api_url, pool.credential, redactor)
    # The same Bootstrap code makes the users and boots the agent-server as a cold start does; its
    # relay forwards nothing until the assignment gives it the conversation's client.
    idle = Bootstrap(settings, client, stop, redactor)
    idle.secrets.append(pool.credential)
    started = time.monotonic()
    try:
        booted = idle.boot_agent_server(f"openhands-pool-{pool.sandbox_id[-8:]}-")
        agent_server = booted.agent_server
        if assigned_niceness is not None:  # its session's autogroup too (the process inherited the rest)
            set_autogroup_niceness(agent_server.process.pid, os.getpriority(os.PRIO_PROCESS, 0))
        agent_server.wait_until_ready(settings.agent_server_ready_timeout_seconds, stop)
        warm_up_conversation_routes(agent_server, booted.session_api_key)
        warm_up_a_conversation(booted, stop)
        boot_seconds = time.monotonic() - started
        log.info("agent-server booted; idle", extra=fields(boot_seconds=round(boot_seconds, 3)))
        client.report_idle(boot_seconds)
        assignment = wait_for_assignment(client, agent_server, stop)
        booted = dataclasses.replace(booted, assigned_at=time.monotonic())
        if assigned_niceness is not None:
            take_back_cpu(assigned_niceness, agent_server.process.pid)
    except BaseException as error:
        idle.stop_children()
        idle.clean_up()
        return _idle_exit_code(error)
    environment = assignment_environment(assignment)
    log.info("assigned", extra=fields(conversation_id=environment.get("CONVERSATION_ID")))
    environ.update(environment)
    return run_conversation(environ, stop, booted)


def yield_cpu_while_idle(idle_niceness: str) -> int | None:
    """Lower this process's priority to ``idle_niceness`` (its threads and children to come
    inherit it) and its autogroup's; the niceness to go back to on assignment, or None when
    nothing changed."""
    if not idle_niceness:
        return None
    try:
        wanted = int(idle_niceness)
    except ValueError:
        log.warning("ignoring a niceness that is not a number", extra=fields(variable=IDLE_NICENESS_VARIABLE))
        return None
    started_at = os.getpriority(os.PRIO_PROCESS, 0)
    if wanted <= started_at:
        return None
    os.setpriority(os.PRIO_PROCESS, 0, min(wanted, 19))
    set_autogroup_niceness(os.getpid(), min(wanted, 19))
    return started_at


def set_autogroup_niceness(pid: int, niceness: int) -> None:
    """The niceness of the autogroup ``pid`` is in (its session's), best effort.

    With the kernel's autogroup scheduling (``kernel.sched_autogroup_enabled``, on by default on
    desktop and many server kernels, and on the machines the local stack runs on), the CPU is
    shared between sessions first and a process's own niceness counts only against the processes
    of its session: the bootstrap and the agent-server each lead a session of their own, so an idle
    sandbox at niceness 19 still took as much CPU as the stack it ran beside (measured: two busy
    processes in sessions of their own split a core 50/50 whatever their niceness; with one
    autogroup at 19, 98/2). A kernel without autogroups has no such file: nothing to do.
    """
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{niceness}\n")
    except FileNotFoundError:
        return
    except OSError as error:
        log.warning("could not set the autogroup's priority", extra=fields(pid=pid, problem=str(error)))


def take_back_cpu(niceness: int, agent_server_pid: int) -> None:
    """Every thread of the bootstrap's process group and of the agent-server's (it leads its own),
    and both their autogroups, back to ``niceness`` (lowering niceness takes CAP_SYS_NICE: the
    local stack's root bootstrap has it)."""
    groups = {"bootstrap": os.getpgid(0), "agent-server": agent_server_pid}
    for name, group in groups.items():
        try:
            os.setpriority(os.PRIO_PGRP, group, niceness)
        except OSError as error:
            log.warning("could not take back the CPU priority", extra=fields(group=name, problem=str(error)))
    for pid in (os.getpid(), agent_server_pid):
        set_autogroup_niceness(pid, niceness)


WARM_UP_TIMEOUT_SECONDS = 30.0
WARM_UP_REQUESTS = (
    ("GET", "/api/conversations/search?limit=1", None),
    # Refused by validation (422) before anything is made: no conversation comes of it.
    ("POST", "/api/conversations", b'{"workspace": 0}'),
)
"""Requests through the agent-server's conversation routes that create nothing: FastAPI builds
each included router's route contexts on the first request that passes through it (0.2 s of CPU
here, measured with the server's own utime), which would otherwise be part of the assigned
conversation's creation."""


def warm_up_conversation_routes(agent_server: AgentServer, session_api_key: str) -> None:
    """Best effort, before reporting idle; only to a listener that is the server's own (the key
    becomes the conversation's)."""
    if not agent_server.owns_its_port():
        return
    for method, path, body in WARM_UP_REQUESTS:
        _call(agent_server, session_api_key, method, path, body, refusal_expected=422)


WARM_UP_CONVERSATION_SECONDS = 30.0
WARM_UP_POLL_SECONDS = 0.05
WARM_UP_ENDED = frozenset({"error", "finished", "stuck"})


def warm_up_a_conversation(booted: BootedAgentServer, stop: StopController) -> None:
    """Create a conversation, let its agent take its first step, delete it; best effort.

    An agent-server's first conversation with a first message costs it more to create than any
    later one: the agent's and its tools' first use, the LLM client's first request. Measured on
    a lone agent-server: 0.27 s, then 0.15 s, and 0.15 s for the first after this warm-up; in a
    claimed pool sandbox of the local stack, p50 0.33 s against 0.36 s without it (6 + 6 samples
    side by side). An idle sandbox has the time to spare (0.8-1.7 s).

    It holds no secret: its model's URL is a loopback port that refuses connections (the agent's
    step ends in an error at once, without a retry). It works in an empty directory of the agent
    user's, removed afterwards with what its tools left in the agent's TMPDIR. The relay takes
    none of its events: it serves only the conversation it is given on assignment. Deleting it
    removes its state from the agent-server's store.
    """
    agent_server, key = booted.agent_server, booted.session_api_key
    if not agent_server.owns_its_port():
        return
    users = booted.users
    left_before = set(users.agent.tmp.iterdir())
    working_dir = users.agent.tmp / "warm-up"
    private_directory(working_dir, users.agent)
    conversation_id = str(uuid.uuid4())
    started = time.monotonic()
    try:
        with refused_loopback_port() as port:
            body = warm_up_request(conversation_id, str(working_dir), port)
            if _call(agent_server, key, "POST", "/api/conversations", body) is None:
                return
            status = None
            deadline = started + WARM_UP_CONVERSATION_SECONDS
            while status not in WARM_UP_ENDED and time.monotonic() < deadline:
                answer = _call(agent_server, key, "GET", f"/api/conversations/{conversation_id}")
                status = answer.get("execution_status") if isinstance(answer, dict) else None
                if stop.wait(WARM_UP_POLL_SECONDS):
                    break
        _call(agent_server, key, "DELETE", f"/api/conversations/{conversation_id}")
        log.info(
            "agent-server warmed up",
            extra=fields(seconds=round(time.monotonic() - started, 3), execution_status=status),
        )
    finally:
        # Its directory, and what its tools left in the agent's TMPDIR (the file editor's history).
        with users.acting_as(users.agent):
            for left in set(users.agent.tmp.iterdir()) - left_before:
                if left.is_dir() and not left.is_symlink():
                    shutil.rmtree(left, ignore_errors=True)
                else:
                    left.unlink(missing_ok=True)


def warm_up_request(conversation_id: str, working_dir: str, llm_port: int) -> bytes:
    """A conversation with a first message to run, the agent's tools and no secret."""
    return json.dumps(
        {
            "conversation_id": conversation_id,
            "workspace": {"kind": "LocalWorkspace", "working_dir": working_dir},
            "agent_settings": {
                "agent_kind": "openhands",
                "llm": {
                    "usage_id": "warm-up",
                    "model": "openai/warm-up",
                    "base_url": f"http://127.0.0.1:{llm_port}/v1",
                    "api_key": "warm-up",  # a placeholder: without one the client refuses before any request
                    "num_retries": 0,
                },
                "agent_context": {"load_project_skills": False},
            },
            "confirmation_policy": {"kind": "NeverConfirm"},
            "initial_message": {"role": "user", "content": [{"type": "text", "text": "warm-up"}], "run": True},
        }
    ).encode()


@contextmanager
def refused_loopback_port() -> Iterator[int]:
    """A loopback port nothing can listen on while the block runs: bound here, never listening,
    so a connection to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def _call(
    agent_server: AgentServer,
    key: str,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    refusal_expected: int | None = None,
) -> Any:
    """One warm-up request to the agent-server; its JSON answer, or None when it failed (logged,
    unless it was the refusal expected)."""
    headers = {SESSION_KEY_HEADER: key, "Content-Type": "application/json"}
    request = http_request(agent_server.local_url + path, method=method, body=body, headers=headers)
    try:
        with open_http(request, WARM_UP_TIMEOUT_SECONDS) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        error.read()
        if error.code != refusal_expected:
            log.warning("agent-server warm-up refused", extra=fields(path=path, status=error.code))
    except (urllib.error.URLError, OSError, ValueError) as error:
        log.warning("agent-server warm-up failed", extra=fields(path=path, problem=str(error)))
    return None


def _idle_exit_code(error: BaseException) -> int:
    match error:
        case StopRequested():
            return ExitCode.STOPPED
        case ControlPlaneRejected():
            log.info("retired by the pool", extra=fields(status=error.status))
            return ExitCode.CONTROL_PLANE_GONE
        case ControlPlaneUnavailable():
            log.error("the control plane is unreachable", extra=fields(problem=str(error)))
            return ExitCode.CONTROL_PLANE_GONE
        case SandboxFailure():
            log.error(error.message, extra=fields(error_code=error.code.value, details=error.details))
            return ExitCode.AGENT_SERVER_EXITED
        case Exception():
            log.error("unexpected error while idle", exc_info=error)
            return ExitCode.FAILED
    raise error


def wait_for_assignment(client: PoolClient, agent_server: AgentServer, stop: StopController) -> dict[str, str]:
    """Long-poll until assigned; a stop request or the agent-server's death ends the wait at once."""
    while True:
        assignment = _while_alive(lambda: client.wait_for_assignment(ASSIGNMENT_WAIT_SECONDS), agent_server, stop)
        if assignment is not None:
            return assignment


def _while_alive[T](call: Callable[[], T], agent_server: AgentServer, stop: StopController) -> T:
    """Run ``call`` in a thread; give up as soon as a stop is requested or the agent-server dies."""
    results: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            results.put((True, call()))
        except BaseException as error:  # handed to the waiting thread
            results.put((False, error))

    threading.Thread(target=run, name="pool-poll", daemon=True).start()
    while True:
        try:
            succeeded, value = results.get(timeout=IDLE_CHECK_SECONDS)
        except queue.Empty:
            stop.raise_if_requested()
            if not agent_server.is_running():
                raise SandboxFailure(
                    ErrorCode.RUNTIME_UNHEALTHY,
                    f"The idle agent-server exited with status {agent_server.process.returncode}.",
                    {"log_tail": agent_server.log_tail()},
                ) from None
            continue
        if succeeded:
            return value
        raise value


__all__ = ["PoolClient", "PoolCredential", "run_pool_sandbox"]
