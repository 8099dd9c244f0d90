"""Entrypoint of the sandbox container: ``python -m openhands_sandbox.bootstrap``.

Reports each phase to the control plane, prepares the workspace, starts the agent-server,
creates the agent conversation, reports ``ready`` and then stays alive as long as the
agent-server runs. See docs/sandbox-protocol.md and sandbox/README.md.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

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
from openhands_sandbox.users import SandboxUser, SandboxUsers, unsearchable_ancestor
from openhands_sandbox.workspace import (
    SETUP_SCRIPT,
    Workspace,
    head_commit,
    head_commit_from_files,
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


@dataclass(frozen=True)
class WarmAgentServer:
    """What a pool sandbox made before it had a conversation (openhands_sandbox.warm): its users
    and private directories, the agent-server it booted as the agent user with a session key of
    its own, and the event relay whose URL that agent-server's webhooks name (started on assignment)."""

    users: SandboxUsers
    tmux_dir: Path
    agent_server: AgentServer
    relay: EventRelay
    session_api_key: str = field(repr=False)


class Bootstrap:
    def __init__(
        self,
        settings: SandboxSettings,
        client: ControlPlaneClient,
        stop: StopController,
        redactor: Redactor,
        warm: WarmAgentServer | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.stop = stop
        self.redactor = redactor
        self.secrets: list[str] = [settings.token]
        self.agent_server: AgentServer | None = None
        self.relay: EventRelay | None = None
        self.inbox: InboxPoller | None = None
        self._users: SandboxUsers | None = None
        self._tmux_dir: Path | None = None
        self.warm = warm
        if warm is not None:
            # Stopped and cleaned up with the rest on any ending.
            self._users, self._tmux_dir, self.agent_server = warm.users, warm.tmux_dir, warm.agent_server
            self.secrets.append(warm.session_api_key)
            self.redactor.add([warm.session_api_key])

    @property
    def users(self) -> SandboxUsers:
        if self._users is None:
            raise RuntimeError("the sandbox users are made once the context is known")
        return self._users

    def run(self) -> int:
        try:
            return self.serve()
        finally:
            self.clean_up()

    def serve(self) -> int:
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
        users = self.make_users(context)
        # The clone runs as the bootstrap, in a tree nobody else has touched yet.
        git = Git(
            env={**self.child_environment(), "HOME": str(users.bootstrap_dir)},
            timeout_seconds=self.settings.git_timeout_seconds,
            stop=self.stop,
        )

        self.enter(Phase.SETTING_UP_WORKSPACE)
        workspace = self.set_up_workspace(context, git, users.bootstrap_dir)

        self.enter(Phase.RUNNING_SETUP_SCRIPT)
        self.run_setup_script(context, workspace)

        self.enter(Phase.SETTING_UP_GIT_HOOKS)
        microagents = self.set_up_git_hooks(workspace)
        if self.warm is not None:
            # The agent-server already runs as the agent user: no repository code may run as that
            # user before the conversation exists, so HEAD is read from the files, not with git.
            with users.acting_as(users.agent):
                commit = head_commit_from_files(workspace.path)
        else:
            commit = head_commit(self.git_as(users.agent), workspace.path)
            # Whatever that git left running (a repository can name a `core.fsmonitor` command).
            users.end_processes_of(users.agent)

        self.enter(Phase.STARTING_AGENT_SERVER)
        relay = self.start_relay(context)
        agent_server = self.start_agent_server(context, workspace.path)
        relay.before_stopped_status = WorkspacePublisher(
            self.client,
            workspace.path,
            commit,
            # git in the workspace runs as the agent user (the repository's config is its own).
            GitRunner(env=self.child_environment(users.agent), user=users.agent.uid, group=users.agent.gid),
            self.settings.workspace_diff_cap_bytes,
        ).publish
        report = ReadyReport(
            agent_server_url=self.agent_server_url(),
            agent_conversation_id=agent_server.create_conversation(start_conversation_request(context, workspace.path)),
            workspace_dir=str(workspace.path),
            commit=commit,
            microagents=microagents,
            session_api_key=self.warm.session_api_key if self.warm else None,
        )
        self.stop.raise_if_requested()
        self.client.send_ready(report)
        self.start_inbox(agent_server, report.agent_conversation_id, self.session_api_key(context))
        return StartedRuntime(agent_server, report)

    def session_api_key(self, context: ConversationContext) -> str:
        """The agent-server's key: the context's, or the one a warm sandbox booted it with."""
        return self.warm.session_api_key if self.warm is not None else context.session_api_key

    def start_relay(self, context: ConversationContext) -> EventRelay:
        """The webhook relay, before the agent-server: its URL is in the agent-server's config.
        A warm sandbox made its relay (unstarted) before booting; it forwards from now on."""
        if self.warm is not None:
            self.relay = self.warm.relay
            self.relay.client = self.client
            self.relay.on_rejected = lambda: self.stop.request(StopReason.REJECTED)
        else:
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

    def make_users(self, context: ConversationContext) -> SandboxUsers:
        """The sandbox's private directories and users; fails if a user cannot reach its paths.
        A warm sandbox made them before it booted its agent-server."""
        if self.warm is not None:
            return self.users
        return self.make_users_named(f"openhands-sandbox-{context.conversation_id[:8]}-")

    def make_users_named(self, prefix: str) -> SandboxUsers:
        settings = self.settings
        users = SandboxUsers.create(settings.runtime_dir, prefix, settings.setup_uid, settings.agent_uid)
        self._users = users
        if users.separated:
            python = Path(os.path.realpath(settings.agent_server_python))
            needs = [(users.setup, settings.workspace_root), (users.agent, settings.workspace_root)]
            needs += [(user, user.home) for user in (users.setup, users.agent)] + [(users.agent, python.parent)]
            for user, path in needs:
                blocked = unsearchable_ancestor(path, user.uid, user.gid)
                if blocked is not None:
                    raise SandboxFailure(
                        ErrorCode.INTERNAL,
                        f"The {user.role} user (uid {user.uid}) cannot reach {path}: {blocked} is not "
                        "searchable by it. Give the sandbox directories and the agent-server's Python "
                        "paths that other users may pass through.",
                    )
        log.info(
            "sandbox users",
            extra=fields(
                separated=users.separated,
                setup_uid=users.setup.uid,
                agent_uid=users.agent.uid,
                private_dir=str(users.root),
            ),
        )
        return users

    def git_as(self, user: SandboxUser) -> Git:
        return Git(
            env=self.child_environment(user),
            timeout_seconds=self.settings.git_timeout_seconds,
            stop=self.stop,
            run_as=user.run_as,
        )

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
        """The setup script runs as the setup user, which gets the workspace for it; then every
        process of that user is killed and the workspace goes to the agent user."""
        users = self.users
        workspace_root = self.settings.workspace_root
        if not (workspace.path / SETUP_SCRIPT).is_file():
            users.hand_workspace_to(workspace_root, users.agent, previous_owner=0)
            log.info("no setup script")
            return
        users.hand_workspace_to(workspace_root, users.setup, previous_owner=0)
        try:
            run_setup_script(
                workspace.path,
                env=self.child_environment(users.setup),
                timeout_seconds=context.setup_script_timeout_seconds,
                stop=self.stop,
                run_as=users.setup.run_as,
            )
        finally:
            users.end_processes_of(users.setup)
            users.remove_files_of(users.setup)
        users.hand_workspace_to(workspace_root, users.agent, previous_owner=users.setup.uid)
        log.info("setup script done")

    def set_up_git_hooks(self, workspace: Workspace) -> list[str]:
        """Install the pre-commit hook; return the repository's microagent names.

        Done with the agent user's permissions: the tree is the repository's (and the setup
        script's), so a symbolic link in it must not lead root's writes elsewhere.
        """
        with self.users.acting_as(self.users.agent):
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

    def start_agent_server(self, context: ConversationContext, workspace_dir: Path) -> AgentServer:
        if self.warm is not None:
            # Booted before the assignment (with this relay's webhook); it still has to answer.
            self.warm.agent_server.wait_until_ready(self.settings.agent_server_ready_timeout_seconds, self.stop)
            return self.warm.agent_server
        return self.launch_agent_server(
            context.session_api_key,
            workspace_dir,
            (self.relay.webhook_spec(),) if self.relay is not None else (),
        )

    def launch_agent_server(
        self, session_api_key: str, workspace_dir: Path, webhooks: tuple[dict[str, Any], ...]
    ) -> AgentServer:
        """The agent-server as the agent user, ready (a cold start, or a warm sandbox's boot)."""
        users = self.users
        self._tmux_dir = users.tmux_directory()
        self.agent_server = AgentServer.start(
            AgentServerLaunch(
                python=self.settings.agent_server_python,
                host=self.settings.agent_server_host,
                port=self.settings.agent_server_port,
                session_api_key=session_api_key,
                working_dir=workspace_dir,
                home_dir=users.agent.home,
                state_dir=users.agent_state,
                log_path=users.bootstrap_dir / "agent-server.log",
                config_path=users.root / "agent-server-config.json",
                tmux_dir=self._tmux_dir,
                env=self.child_environment(users.agent),
                run_as=users.agent.run_as,
                webhooks=webhooks,
            )
        )
        self.agent_server.wait_until_ready(self.settings.agent_server_ready_timeout_seconds, self.stop)
        return self.agent_server

    def child_environment(self, user: SandboxUser | None = None) -> dict[str, str]:
        """No credential of the sandbox; with ``user``, that user's own HOME and TMPDIR."""
        return {**clean_environment(self.secrets), **(user.environment() if user else {})}

    def clean_up(self) -> None:
        """Once every child is stopped: kill what is left of both users, remove their files."""
        if self._users is None:
            return
        try:
            for user in (self._users.setup, self._users.agent):
                self._users.end_processes_of(user)
                self._users.remove_files_of(user)
        finally:
            self._users.remove(*([self._tmux_dir] if self._tmux_dir else []))

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


def main() -> int:
    if os.environ.get("SANDBOX_POOL_TOKEN"):
        from openhands_sandbox.warm import run_pool_sandbox  # the pool's entry point (it imports this module)

        return run_pool_sandbox(os.environ)
    stop = StopController()
    install_stop_signal_handlers(stop)
    return run_conversation(os.environ, stop)


def run_conversation(
    environ: MutableMapping[str, str], stop: StopController, warm: WarmAgentServer | None = None
) -> int:
    """Serve the conversation ``environ`` names: a cold task's environment, or the one a warm
    sandbox received as its assignment (with what it made before)."""
    try:
        settings = SandboxSettings.from_environ(environ)
    except SettingsError as error:
        print(f"openhands-sandbox: {error}", file=sys.stderr)
        return ExitCode.FAILED
    redactor = Redactor([settings.token])
    configure_logging(settings.conversation_id, redactor)
    client = ControlPlaneClient(settings.api_url, settings.token, redactor)
    return Bootstrap(settings, client, stop, redactor, warm).run()


if __name__ == "__main__":
    sys.exit(main())
