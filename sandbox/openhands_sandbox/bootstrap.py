"""Entrypoint of the sandbox container: ``python -m openhands_sandbox.bootstrap``.

Reports each phase to the control plane, prepares the workspace, starts the agent-server,
creates the agent conversation, reports ``ready`` and then stays alive as long as the
agent-server runs. See docs/sandbox-protocol.md and sandbox/README.md.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from openhands_sandbox.agent_server import (
    AgentServer,
    AgentServerLaunch,
    advertised_url,
    start_conversation_request,
)
from openhands_sandbox.context import ContextError, ConversationContext
from openhands_sandbox.control_plane import (
    ControlPlaneClient,
    ControlPlaneRejected,
    ControlPlaneUnavailable,
    Phase,
    ReadyReport,
)
from openhands_sandbox.errors import (
    ErrorCode,
    SandboxFailure,
    StopReason,
    StopRequested,
)
from openhands_sandbox.git import Git
from openhands_sandbox.heartbeat import Heartbeat
from openhands_sandbox.inbox import AgentConversation, InboxPoller
from openhands_sandbox.lifecycle import StopController, install_stop_signal_handlers
from openhands_sandbox.logs import Redactor, configure_logging, fields
from openhands_sandbox.processes import clean_environment
from openhands_sandbox.relay import EventRelay
from openhands_sandbox.settings import SandboxSettings, SettingsError
from openhands_sandbox.workspace import (
    Workspace,
    head_commit,
    install_pre_commit_hook,
    list_microagents,
    prepare_workspace,
    run_setup_script,
)
from openhands_sandbox.workspace_report import GitRunner, WorkspacePublisher

log = logging.getLogger("openhands_sandbox.bootstrap")

SUPERVISE_POLL_SECONDS = 0.5
RELAY_DRAIN_SECONDS = 10.0
"""At the end, how long the relay may take to forward what the agent-server posted last."""


class ExitCode(IntEnum):
    STOPPED = 0
    """SIGTERM/SIGINT."""
    FAILED = 1
    """A failure (reported as a ``failed`` event when the control plane could be reached)."""
    CONTROL_PLANE_GONE = 2
    """The control plane answered 401/409, or could not be reached."""
    AGENT_SERVER_EXITED = 3
    """The agent-server exited after ``ready``."""


@dataclass(frozen=True)
class StartedRuntime:
    agent_server: AgentServer
    report: ReadyReport


class Bootstrap:
    def __init__(
        self,
        settings: SandboxSettings,
        client: ControlPlaneClient,
        stop: StopController,
        redactor: Redactor,
    ) -> None:
        self.settings = settings
        self.client = client
        self.stop = stop
        self.redactor = redactor
        self.secrets: list[str] = [settings.token]
        self.agent_server: AgentServer | None = None
        self.relay: EventRelay | None = None
        self.inbox: InboxPoller | None = None

    def run(self) -> int:
        heartbeat = Heartbeat(
            self.client,
            self.settings.heartbeat_seconds,
            on_rejected=lambda: self.stop.request(StopReason.REJECTED),
        )
        heartbeat.start()
        try:
            runtime = self.start_runtime()
        except Exception as error:
            heartbeat.stop()  # no heartbeat may follow the final event
            return self.end_early(error)
        heartbeat.stop()
        log.info(
            "ready",
            extra=fields(
                agent_server_url=runtime.report.agent_server_url,
                agent_conversation_id=runtime.report.agent_conversation_id,
            ),
        )
        return self.supervise(runtime.agent_server)

    def end_early(self, error: Exception) -> int:
        """Stop the children, report what went wrong if it is ours to report, pick the exit code."""
        match error:
            case SandboxFailure():
                return self.fail(error)
            case StopRequested():
                return self.shut_down(error.reason)
            case ControlPlaneRejected():
                log.warning("the control plane rejected us", extra=fields(status=error.status))
                return self.shut_down(StopReason.REJECTED)
            case ControlPlaneUnavailable():
                log.error("the control plane is unreachable", extra=fields(problem=str(error)))
                self.stop_children()
                return ExitCode.CONTROL_PLANE_GONE
            case _:
                log.error("unexpected error", exc_info=error)
                internal = f"The sandbox bootstrap hit an unexpected {type(error).__name__}."
                return self.fail(SandboxFailure(ErrorCode.INTERNAL, internal))

    # --- phases ---------------------------------------------------------------------------

    def start_runtime(self) -> StartedRuntime:
        """The five phases of docs/sandbox-protocol.md, each reported before it starts."""
        self.enter(Phase.RUNTIME_STARTED)
        context = self.fetch_context()
        scratch_dir = Path(tempfile.mkdtemp(prefix=f"openhands-sandbox-{context.conversation_id[:8]}-"))
        git = Git(env=self.child_environment(), timeout_seconds=self.settings.git_timeout_seconds, stop=self.stop)

        self.enter(Phase.SETTING_UP_WORKSPACE)
        workspace = self.set_up_workspace(context, git, scratch_dir)

        self.enter(Phase.RUNNING_SETUP_SCRIPT)
        self.run_setup_script(context, workspace)

        self.enter(Phase.SETTING_UP_GIT_HOOKS)
        microagents = self.set_up_git_hooks(workspace)

        self.enter(Phase.STARTING_AGENT_SERVER)
        relay = self.start_relay(context)
        agent_server = self.start_agent_server(context, workspace.path, scratch_dir)
        commit = head_commit(git, workspace.path)
        relay.before_stopped_status = WorkspacePublisher(
            self.client,
            workspace.path,
            commit,
            GitRunner(env=self.child_environment()),
            self.settings.workspace_diff_cap_bytes,
        ).publish
        report = ReadyReport(
            agent_server_url=self.agent_server_url(),
            agent_conversation_id=agent_server.create_conversation(start_conversation_request(context, workspace.path)),
            workspace_dir=str(workspace.path),
            commit=commit,
            microagents=microagents,
        )
        self.stop.raise_if_requested()
        self.client.send_ready(report)
        self.start_inbox(agent_server, report.agent_conversation_id, context.session_api_key)
        return StartedRuntime(agent_server, report)

    def start_relay(self, context: ConversationContext) -> EventRelay:
        """The webhook relay, before the agent-server: its URL is in the agent-server's config."""
        self.relay = EventRelay(
            self.client,
            context.session_api_key,
            on_rejected=lambda: self.stop.request(StopReason.REJECTED),
        )
        self.relay.start()
        return self.relay

    def start_inbox(self, agent_server: AgentServer, agent_conversation_id: str, session_api_key: str) -> None:
        self.inbox = InboxPoller(
            self.client,
            AgentConversation(agent_server.local_url, agent_conversation_id, session_api_key),
            on_rejected=lambda: self.stop.request(StopReason.REJECTED),
            wait_seconds=self.settings.inbox_wait_seconds,
        )
        self.inbox.start()

    def set_up_workspace(self, context: ConversationContext, git: Git, scratch_dir: Path) -> Workspace:
        workspace = prepare_workspace(
            git=git,
            workspace_root=self.settings.workspace_root,
            repository=context.repository,
            workspace_branch=context.workspace_branch,
            fetch_depth=self.settings.git_fetch_depth,
            scratch_dir=scratch_dir,
        )
        log.info("workspace ready", extra=fields(workspace_dir=str(workspace.path)))
        return workspace

    def run_setup_script(self, context: ConversationContext, workspace: Workspace) -> None:
        ran = run_setup_script(
            workspace.path,
            env=self.child_environment(),
            timeout_seconds=context.setup_script_timeout_seconds,
            stop=self.stop,
        )
        log.info("setup script done" if ran else "no setup script")

    def set_up_git_hooks(self, workspace: Workspace) -> list[str]:
        """Install the pre-commit hook; return the repository's microagent names."""
        installed = install_pre_commit_hook(workspace.path)
        microagents = list_microagents(workspace.path)
        log.info("git hooks", extra=fields(pre_commit_installed=installed, microagents=microagents))
        return microagents

    def agent_server_url(self) -> str:
        settings = self.settings
        return advertised_url(
            settings.agent_server_host, settings.agent_server_port, settings.agent_server_url, os.environ
        )

    def enter(self, phase: Phase) -> None:
        """Report ``phase`` before doing it (unless a stop was requested meanwhile)."""
        self.stop.raise_if_requested()
        log.info("phase", extra=fields(phase=phase.value))
        self.client.send_phase(phase)

    def fetch_context(self) -> ConversationContext:
        try:
            context = ConversationContext.from_json(self.client.fetch_context())
        except ContextError as error:
            raise SandboxFailure(
                ErrorCode.INTERNAL,
                f"The control plane sent an unusable context: {error}.",
            ) from None
        self.secrets.extend(context.secrets())
        self.redactor.add(context.secrets())
        if context.conversation_id != self.settings.conversation_id:
            raise SandboxFailure(
                ErrorCode.INTERNAL,
                "The context belongs to another conversation than CONVERSATION_ID.",
            )
        return context

    def start_agent_server(self, context: ConversationContext, workspace_dir: Path, scratch_dir: Path) -> AgentServer:
        self.agent_server = AgentServer.start(
            AgentServerLaunch(
                python=self.settings.agent_server_python,
                host=self.settings.agent_server_host,
                port=self.settings.agent_server_port,
                session_api_key=context.session_api_key,
                working_dir=workspace_dir,
                state_dir=scratch_dir / "agent-server",
                tmux_dir=short_temporary_directory("oh-tmux-"),
                env=self.child_environment(),
                webhooks=(self.relay.webhook_spec(),) if self.relay is not None else (),
            )
        )
        self.agent_server.wait_until_ready(self.settings.agent_server_ready_timeout_seconds, self.stop)
        return self.agent_server

    def child_environment(self) -> dict[str, str]:
        return clean_environment(self.secrets)

    # --- after ready, and endings ---------------------------------------------------------

    def supervise(self, agent_server: AgentServer) -> int:
        """Live as long as the agent-server; stop it on SIGTERM/SIGINT."""
        while agent_server.is_running():
            if self.stop.wait(SUPERVISE_POLL_SECONDS):
                return self.shut_down(self.stop.reason or StopReason.SIGNAL)
        log.error(
            "the agent-server exited",
            extra=fields(
                exit_code=agent_server.process.returncode,
                log_tail=agent_server.log_tail(),
            ),
        )
        agent_server.stop()  # what it left behind: its process group, its tmux servers
        return ExitCode.AGENT_SERVER_EXITED

    def fail(self, failure: SandboxFailure) -> int:
        log.error(
            failure.message,
            extra=fields(error_code=failure.code.value, details=failure.details),
        )
        try:
            self.client.send_failed(failure)
        except (ControlPlaneRejected, ControlPlaneUnavailable) as problem:
            log.warning("could not report the failure", extra=fields(problem=str(problem)))
        self.stop_children()
        return ExitCode.FAILED

    def shut_down(self, reason: StopReason) -> int:
        log.info("stopping", extra=fields(reason=reason.value))
        self.stop_children()
        return ExitCode.STOPPED if reason is StopReason.SIGNAL else ExitCode.CONTROL_PLANE_GONE

    def stop_children(self) -> None:
        """The inbox first (nothing new reaches the agent), then the agent-server, whose last
        events the relay forwards before it closes."""
        if self.inbox is not None:
            self.inbox.stop()
        if self.agent_server is not None:
            self.agent_server.stop()
        if self.relay is not None:
            self.relay.close(RELAY_DRAIN_SECONDS)


def short_temporary_directory(prefix: str) -> Path:
    """A new private directory with a short path (for unix sockets), in /tmp if possible."""
    short_root = Path("/tmp")  # noqa: S108 - mkdtemp makes a private directory in it
    parent = short_root if os.access(short_root, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def main() -> int:
    try:
        settings = SandboxSettings.from_environ(os.environ)
    except SettingsError as error:
        print(f"openhands-sandbox: {error}", file=sys.stderr)
        return ExitCode.FAILED
    redactor = Redactor([settings.token])
    configure_logging(settings.conversation_id, redactor)
    stop = StopController()
    install_stop_signal_handlers(stop)
    client = ControlPlaneClient(settings.api_url, settings.token, redactor)
    return Bootstrap(settings, client, stop, redactor).run()


if __name__ == "__main__":
    sys.exit(main())
