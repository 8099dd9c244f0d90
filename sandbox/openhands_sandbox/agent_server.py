"""The OpenHands agent-server: start it, wait until ready, create the conversation, stop it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openhands_sandbox.context import ConversationContext, FirstMessage
from openhands_sandbox.errors import ErrorCode, SandboxFailure
from openhands_sandbox.http_client import http_request, open_http
from openhands_sandbox.lifecycle import StopController
from openhands_sandbox.logs import fields
from openhands_sandbox.processes import read_file_tail, terminate_process_group
from openhands_sandbox.users import RunAs

log = logging.getLogger(__name__)

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})  # noqa: S104 - recognising, not binding
READY_POLL_SECONDS = 0.5
PROBE_TIMEOUT_SECONDS = 2.0
CREATE_CONVERSATION_TIMEOUT_SECONDS = 120.0
STOP_GRACE_SECONDS = 10.0
TMUX_KILL_TIMEOUT_SECONDS = 10.0
LOG_TAIL_BYTES = 4096
SESSION_KEY_HEADER = "X-Session-API-Key"
LLM_USAGE_ID = "agent"
SECURITY_ANALYZER_KINDS = {"llm": "LLMSecurityAnalyzer"}
"""OpenHands' ``security_analyzer`` setting -> the agent-server's analyzer ``kind``."""


@dataclass(frozen=True)
class AgentServerLaunch:
    python: str
    host: str
    port: int
    session_api_key: str
    working_dir: Path
    """The workspace: the conversations' working directory (never the server's own)."""
    home_dir: Path
    """The server's own working directory and HOME, outside the repository."""
    state_dir: Path
    """Conversations and bash events live here, outside the repository."""
    log_path: Path
    """The server's output, in a directory of the bootstrap's."""
    config_path: Path
    """Its config file (written here, empty), where only the bootstrap can write."""
    tmux_dir: Path
    """TMUX_TMPDIR of the server: its tmux sockets, to find them when stopping.
    Keep it short: a unix socket path is limited to about 100 bytes."""
    env: Mapping[str, str]
    """Clean environment (no sandbox credentials); the session key is added here."""
    webhooks: tuple[dict[str, Any], ...] = ()
    """``WebhookSpec``s of the agent-server's config (the bootstrap's event relay)."""
    run_as: RunAs | None = None
    """The agent user (None: the bootstrap's own identity)."""


class AgentServer:
    """A running ``python -m openhands.agent_server`` in its own process group."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        launch: AgentServerLaunch,
        log_path: Path,
    ) -> None:
        self.process = process
        self.launch = launch
        self.log_path = log_path

    @classmethod
    def start(cls, launch: AgentServerLaunch) -> AgentServer:
        """Start the server, isolated from the repository.

        ``python -I``: no ``PYTHON*`` variable, no user site-packages, no working directory
        on ``sys.path`` (a repository's own ``openhands/agent_server`` cannot shadow the
        installed one); the working directory is the server's home, not the workspace.
        """
        require_free_port(launch.port)
        log_path = launch.log_path
        argv = [
            launch.python,
            "-I",
            "-u",
            "-m",
            "openhands.agent_server",
            "--host",
            launch.host,
            "--port",
            str(launch.port),
        ]
        try:
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    argv,
                    cwd=launch.home_dir,
                    env=agent_server_environment(launch),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **(launch.run_as.popen_options() if launch.run_as else {}),
                )
        except OSError as error:
            shutil.rmtree(launch.tmux_dir, ignore_errors=True)
            raise SandboxFailure(
                ErrorCode.RUNTIME_UNHEALTHY,
                f"Could not start the agent-server with {launch.python}: {error.strerror}.",
            ) from None
        log.info(
            "agent-server started",
            extra=fields(pid=process.pid, port=launch.port, log_file=str(log_path)),
        )
        return cls(process, launch, log_path)

    @property
    def local_url(self) -> str:
        """URL this process uses to talk to the server (loopback when bound to all interfaces)."""
        return f"http://{connectable_host(self.launch.host)}:{self.launch.port}"

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self) -> str:
        return read_file_tail(self.log_path, LOG_TAIL_BYTES)

    def wait_until_ready(self, timeout_seconds: float, stop: StopController) -> None:
        """Poll ``GET /ready`` until it answers 200; fail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            stop.raise_if_requested()
            if not self.is_running():
                raise SandboxFailure(
                    ErrorCode.RUNTIME_UNHEALTHY,
                    f"The agent-server exited with status {self.process.returncode} while starting.",
                    {"exit_code": self.process.returncode, "log_tail": self.log_tail()},
                )
            if self._answers_ready() and self.owns_its_port():
                return
            if time.monotonic() >= deadline:
                raise SandboxFailure(
                    ErrorCode.RUNTIME_UNHEALTHY,
                    f"The agent-server was not ready within {timeout_seconds:g} seconds.",
                    {"log_tail": self.log_tail()},
                )
            stop.wait(READY_POLL_SECONDS)

    def owns_its_port(self) -> bool:
        """True when every socket listening on the port belongs to this server's processes.

        As the agent user (the bootstrap is root), a socket is the server's when the agent user
        owns it: that user's only processes are the server's (every other one was killed before it
        started). Root cannot read that user's fd table in a container (no CAP_SYS_PTRACE, as on
        Fargate), so the sockets' owners come from /proc/net. Otherwise (one uid for all) the
        listening sockets must be among the server's own open files.
        """
        listeners = listening_sockets(self.launch.port)
        if not listeners:
            return False
        if self.launch.run_as is not None:
            return self.is_running() and set(listeners.values()) == {self.launch.run_as.uid}
        return set(listeners) <= socket_inodes_of(process_tree(self.process.pid))

    def _answers_ready(self) -> bool:
        try:
            with open_http(http_request(self.local_url + "/ready"), PROBE_TIMEOUT_SECONDS) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def create_conversation(self, body: dict[str, Any]) -> str:
        """``POST /api/conversations``; returns the agent-server's conversation id.

        The body holds the LLM key and the session key: it goes only to a listener that is
        this server's own.
        """
        if not self.owns_its_port():
            raise SandboxFailure(
                ErrorCode.RUNTIME_UNHEALTHY,
                f"Port {self.launch.port} is held by a process that is not the agent-server we started; "
                "nothing was sent to it.",
            )
        request = http_request(
            self.local_url + "/api/conversations",
            body=json.dumps(body).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                SESSION_KEY_HEADER: self.launch.session_api_key,
            },
        )
        try:
            with open_http(request, CREATE_CONVERSATION_TIMEOUT_SECONDS) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise SandboxFailure(
                ErrorCode.RUNTIME_UNHEALTHY,
                f"The agent-server refused to create the conversation (HTTP {error.code}).",
                {
                    "status": error.code,
                    "response": error.read().decode(errors="replace")[-2048:],
                },
            ) from None
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as error:
            raise SandboxFailure(
                ErrorCode.RUNTIME_UNHEALTHY,
                f"Could not create the conversation on the agent-server: {error}.",
                {"log_tail": self.log_tail()},
            ) from None
        conversation_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(conversation_id, str) or not conversation_id:
            raise SandboxFailure(
                ErrorCode.RUNTIME_UNHEALTHY,
                "The agent-server answered without a conversation id.",
            )
        return conversation_id

    def stop(self) -> None:
        """Stop the server's process group, then the tmux servers it started.

        tmux servers detach into sessions of their own, so the process group does not
        reach them; they are found by their sockets in ``tmux_dir``.
        """
        if self.process.returncode is None:
            log.info("stopping the agent-server", extra=fields(pid=self.process.pid))
        terminate_process_group(self.process, STOP_GRACE_SECONDS)
        kill_tmux_servers(self.launch.tmux_dir, self.launch.run_as)
        shutil.rmtree(self.launch.tmux_dir, ignore_errors=True)


# --- who listens on a port ----------------------------------------------------------------

TCP_LISTEN_STATE = "0A"


def listening_sockets(port: int) -> dict[int, int]:
    """The TCP sockets (IPv4 and IPv6) listening on ``port``, from /proc/net: inode -> owner's uid."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            columns = line.split()
            if len(columns) > 9 and columns[3] == TCP_LISTEN_STATE and int(columns[1].rsplit(":", 1)[1], 16) == port:
                sockets[int(columns[9])] = int(columns[7])
    return sockets


def listening_socket_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets (IPv4 and IPv6) listening on ``port``."""
    return set(listening_sockets(port))


def process_tree(root: int) -> set[int]:
    """``root`` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    tree, pending = set(), [root]
    while pending:
        pid = pending.pop()
        if pid not in tree:
            tree.add(pid)
            pending.extend(children.get(pid, []))
    return tree


def socket_inodes_of(pids: set[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def require_free_port(port: int) -> None:
    """Fail unless nothing listens on ``port`` (on any address, IPv4 or IPv6)."""
    if listening_socket_inodes(port):
        raise SandboxFailure(
            ErrorCode.RUNTIME_UNHEALTHY,
            f"Something already listens on the agent-server's port {port}; the agent-server was not started.",
        )


def kill_tmux_servers(tmux_dir: Path, run_as: RunAs | None) -> None:
    """``tmux kill-server`` for every tmux socket under ``tmux_dir`` (TMUX_TMPDIR)."""
    for socket_path in sorted(tmux_dir.glob("tmux-*/*")):
        try:
            subprocess.run(
                ["tmux", "-S", str(socket_path), "kill-server"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                timeout=TMUX_KILL_TIMEOUT_SECONDS,
                check=False,
                # tmux refuses a server of another uid, root's included.
                **(run_as.popen_options() if run_as else {}),
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            log.warning("could not stop a tmux server", extra=fields(problem=str(error)))


def config_file(launch: AgentServerLaunch) -> Path:
    """The agent-server's JSON config, which the server may read, not write: where it keeps its
    conversations and bash events (outside the repository: the defaults are relative to its
    working directory), the default workspace and the webhooks (the bootstrap's event relay).

    Without it the server reads ``workspace/openhands_agent_server_config.json`` relative to its
    working directory, whose ``session_api_keys`` would override ``SESSION_API_KEY``.
    """
    config = {
        "conversations_path": str(launch.state_dir / "conversations"),
        "bash_events_dir": str(launch.state_dir / "bash_events"),
        "workspace_path": str(launch.working_dir),
        "webhooks": list(launch.webhooks),
    }
    launch.config_path.write_text(json.dumps(config, indent=2) + "\n")
    launch.config_path.chmod(0o644)
    return launch.config_path


def agent_server_environment(launch: AgentServerLaunch) -> dict[str, str]:
    """``launch.env``, the session key, the config file and tmux's socket directory; the rest of
    the server's settings are in the config file (every variable would reach the agent's terminal)."""
    return {
        **launch.env,
        "SESSION_API_KEY": launch.session_api_key,
        "OPENHANDS_AGENT_SERVER_CONFIG_PATH": str(config_file(launch)),
        "TMUX_TMPDIR": str(launch.tmux_dir),
    }


def connectable_host(host: str) -> str:
    if host in WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --- the StartConversationRequest ----------------------------------------------------------


def start_conversation_request(
    context: ConversationContext, working_dir: Path, agent_conversation_id: str
) -> dict[str, Any]:
    """Body of ``POST /api/conversations`` (``StartConversationRequest`` of agent-server 1.58)."""
    body: dict[str, Any] = {
        "workspace": {"kind": "LocalWorkspace", "working_dir": str(working_dir)},
        "agent_settings": agent_settings(context),
        "confirmation_policy": confirmation_policy(context),
        "conversation_id": agent_conversation_id,
    }
    if context.agent.max_iterations is not None:
        body["max_iterations"] = context.agent.max_iterations
    analyzer = security_analyzer(context)
    if analyzer is not None:
        body["security_analyzer"] = analyzer
    if context.first_message is not None:
        body["initial_message"] = initial_message(context.first_message)
    return body


def agent_settings(context: ConversationContext) -> dict[str, Any]:
    """``OpenHandsAgentSettings`` (``agent_kind: openhands``)."""
    llm: dict[str, Any] = {"usage_id": LLM_USAGE_ID, "model": context.llm.model}
    if context.llm.api_key:
        llm["api_key"] = context.llm.api_key
    if context.llm.base_url:
        llm["base_url"] = context.llm.base_url
    agent_context: dict[str, Any] = {"load_project_skills": True}
    if context.conversation_instructions:
        agent_context["system_message_suffix"] = context.conversation_instructions
    settings: dict[str, Any] = {
        "agent_kind": "openhands",
        "agent": context.agent.agent,
        "llm": llm,
        "agent_context": agent_context,
    }
    if context.mcp_config:
        settings["mcp_config"] = context.mcp_config
    return settings


def initial_message(message: FirstMessage) -> dict[str, Any]:
    """``SendMessageRequest``: the first message as text plus one image item; the agent acts on it."""
    content: list[dict[str, Any]] = [{"type": "text", "text": message.text}]
    if message.image_urls:
        content.append({"type": "image", "image_urls": list(message.image_urls)})
    return {"role": "user", "content": content, "run": True}


def confirmation_policy(context: ConversationContext) -> dict[str, str]:
    """NeverConfirm, or with confirmation mode: ConfirmRisky when an analyzer rates risk,
    AlwaysConfirm otherwise (as the OpenHands app server chooses)."""
    if not context.agent.confirmation_mode:
        return {"kind": "NeverConfirm"}
    if security_analyzer(context) is not None:
        return {"kind": "ConfirmRisky"}
    return {"kind": "AlwaysConfirm"}


def security_analyzer(context: ConversationContext) -> dict[str, str] | None:
    name = context.agent.security_analyzer
    if not name:
        return None
    kind = SECURITY_ANALYZER_KINDS.get(name.lower())
    if kind is None:
        log.warning(
            "unsupported security analyzer ignored",
            extra=fields(security_analyzer=name),
        )
        return None
    return {"kind": kind}


def agent_conversation_uuid(conversation_id: str) -> str:
    """The agent-server's id for the conversation: the service's id when it is a UUID (ours are),
    a fresh one otherwise; chosen before the create, so the relay knows whose events to take."""
    try:
        return str(uuid.UUID(hex=conversation_id))
    except ValueError:
        return str(uuid.uuid4())


# --- the URL the control plane uses --------------------------------------------------------


def advertised_url(host: str, port: int, explicit_url: str | None, environ: Mapping[str, str]) -> str:
    """The agent-server URL reported in ``ready``.

    ``AGENT_SERVER_URL`` wins; a server bound to a specific address is reached there; one
    bound to all interfaces is reached at the task's private IP (from the ECS task metadata
    endpoint on Fargate, else the address of the default route).
    """
    if explicit_url:
        return explicit_url.rstrip("/")
    if host not in WILDCARD_HOSTS:
        return f"http://{connectable_host(host)}:{port}"
    address = ecs_task_ip(environ.get("ECS_CONTAINER_METADATA_URI_V4")) or default_route_ip()
    return f"http://{connectable_host(address)}:{port}"


def ecs_task_ip(metadata_uri: str | None) -> str | None:
    """First IPv4 address of this container, from the ECS task metadata endpoint v4."""
    if not metadata_uri:
        return None
    try:
        with open_http(http_request(metadata_uri), PROBE_TIMEOUT_SECONDS) as response:
            metadata = json.loads(response.read())
        for network in metadata.get("Networks") or []:
            for address in network.get("IPv4Addresses") or []:
                if isinstance(address, str) and address:
                    return address
    except (urllib.error.URLError, OSError, ValueError, AttributeError) as error:
        log.warning("ECS task metadata unavailable", extra=fields(problem=str(error)))
    return None


def default_route_ip() -> str:
    """The local address used to reach other hosts (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
