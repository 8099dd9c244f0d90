"""Entrypoint of the sandbox container: ``python -m openhands_sandbox.bootstrap``.

Boots the agent-server first (as the agent user, with a session key of its own, no secret and no
conversation: its 13 s of imports overlap the rest), reports each phase to the control plane,
prepares the workspace, creates the agent conversation once the setup user's processes are gone,
reports ``ready`` and then stays alive as long as the agent-server runs. See
docs/sandbox-protocol.md and sandbox/README.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
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
    agent_conversation_uuid,
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
from openhands_sandbox.phase_reporter import PhaseReporter
from openhands_sandbox.processes import agent_environment, clean_environment
from openhands_sandbox.relay import EventRelay
from openhands_sandbox.settings import SandboxSettings, SettingsError
from openhands_sandbox.timings import PROCESS_STARTED, StepTimer
from openhands_sandbox.users import SandboxUser, SandboxUsers, unsearchable_ancestor
from openhands_sandbox.workspace import (
    SETUP_SCRIPT,
    Workspace,
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
class BootedAgentServer:
    """What a sandbox makes before it knows anything of its conversation (``boot_agent_server``):
    its users and private directories, the agent-server started as the agent user with a session
    key of its own, and the event relay whose URL that agent-server's webhooks name (it forwards
    from STATUS$STARTING_AGENT_SERVER on). A cold sandbox makes it first thing; a pool sandbox
    (openhands_sandbox.warm) before it reports idle."""

    users: SandboxUsers
    tmux_dir: Path
    agent_server: AgentServer
    relay: EventRelay
    session_api_key: str = field(repr=False)
    assigned_at: float | None = None
    """A pool sandbox's: when its assignment arrived (monotonic), where the conversation's clock starts."""


class Bootstrap:
    def __init__(
        self,
        settings: SandboxSettings,
        client: ControlPlaneClient,
        stop: StopController,
        redactor: Redactor,
        booted: BootedAgentServer | None = None,
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
        self.booted: BootedAgentServer | None = None
        # Each step's seconds, sent with `ready` (timings.py): from the assignment, or the import.
        assigned_at = booted.assigned_at if booted is not None else None
        self.timer = StepTimer(PROCESS_STARTED if assigned_at is None else assigned_at)
        self.timer.since_began("process_to_start" if assigned_at is None else "assignment_to_start")
        self.phases = PhaseReporter(client, stop)  # sent on a thread of their own; `ready` waits for them
        if booted is not None:
            self.adopt(booted)

    @property
    def users(self) -> SandboxUsers:
        if self._users is None:
            raise RuntimeError("the sandbox users are made when the agent-server boots")
        return self._users

    def adopt(self, booted: BootedAgentServer) -> BootedAgentServer:
        """Serve the conversation with ``booted``: stopped and cleaned up with the rest on any ending."""
        self.booted = booted
        self._users, self._tmux_dir, self.agent_server = booted.users, booted.tmux_dir, booted.agent_server
        if booted.session_api_key not in self.secrets:
            self.secrets.append(booted.session_api_key)
        self.redactor.add([booted.session_api_key])
        return booted

    def boot_agent_server(self, prefix: str) -> BootedAgentServer:
        """Make the users and start the agent-server as the agent user, without waiting for it.

        The one boot of warm and cold sandboxes. It holds nothing of any conversation: a session
        key made here (reported in ``ready``), no LLM key, no conversation, and as its default
        workspace the workspace root, not the workspace (which the conversation names, once the
        setup script is done and the workspace is the agent user's). The relay it names in its
        webhooks answers it from the start and takes nothing until it is given the conversation, and
        only what carries that session key.
        """
        session_api_key = secrets.token_urlsafe(32)
        self.secrets.append(session_api_key)
        self.redactor.add([session_api_key])
        users = self.make_users_named(prefix)
        relay = EventRelay(self.client, session_api_key)
        relay.start_receiving()
        agent_server = self.start_agent_server_process(session_api_key, (relay.webhook_spec(),))
        assert self._tmux_dir is not None
        return BootedAgentServer(users, self._tmux_dir, agent_server, relay, session_api_key)

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
        """The five phases of docs/sandbox-protocol.md, each reported before it starts; the
        agent-server boots meanwhile (a pool sandbox's has booted already)."""
        timer = self.timer
        if self.booted is None:  # first of all: the boot is the longest step, and needs nothing of the service
            self.stop.raise_if_requested()
            with timer.step("users"):
                self.adopt(self.boot_agent_server(f"openhands-sandbox-{self.settings.conversation_id[:8]}-"))
        self.enter(Phase.RUNTIME_STARTED)
        with timer.step("context_fetch"):
            context = self.fetch_context()
        users = self.users
        # The clone runs as the bootstrap, in a tree nobody else has touched yet.
        git = Git(
            env={**self.child_environment(), "HOME": str(users.bootstrap_dir)},
            timeout_seconds=self.settings.git_timeout_seconds,
            stop=self.stop,
        )

        self.enter(Phase.SETTING_UP_WORKSPACE)
        with timer.step("clone"):
            workspace = self.set_up_workspace(context, git, users.bootstrap_dir)

        self.enter(Phase.RUNNING_SETUP_SCRIPT)
        with timer.step("setup_script"):
            self.run_setup_script(context, workspace)

        self.enter(Phase.SETTING_UP_GIT_HOOKS)
        with timer.step("git_hooks"):
            microagents = self.set_up_git_hooks(workspace)
        # The agent-server already runs as the agent user: no repository code may run as that
        # user before the conversation exists, so HEAD is read from the files, not with git.
        with timer.step("head_commit"), users.acting_as(users.agent):
            commit = head_commit_from_files(workspace.path)

        self.enter(Phase.STARTING_AGENT_SERVER)
        with timer.step("agent_server"):
            relay = self.start_relay()
            agent_server = self.ready_agent_server()
        relay.before_stopped_status = WorkspacePublisher(
            self.client,
            workspace.path,
            commit,
            # git in the workspace runs as the agent user (the repository's config is its own).
            GitRunner(env=self.child_environment(users.agent), user=users.agent.uid, group=users.agent.gid),
            self.settings.workspace_diff_cap_bytes,
        ).publish
        with timer.step("conversation_create"):
            agent_conversation_id = agent_conversation_uuid(context.conversation_id)
            relay.serve_conversation(agent_conversation_id)
            agent_conversation_id = agent_server.create_conversation(
                start_conversation_request(context, workspace.path, agent_conversation_id)
            )
        with timer.step("phase_reports"):
            self.phases.flush()  # every phase reaches the service before `ready`
        report = ReadyReport(
            agent_server_url=self.agent_server_url(),
            agent_conversation_id=agent_conversation_id,
            workspace_dir=str(workspace.path),
            commit=commit,
            microagents=microagents,
            # The agent-server's key is the sandbox's own (the context's is not used).
            session_api_key=self.booted_agent_server.session_api_key,
            timings=timer.report(),
        )
        self.stop.raise_if_requested()
        self.client.send_ready(report)
        relay.start_forwarding()  # after `ready`: RUNNING does not wait on the first events' posts
        self.start_inbox(agent_server, report.agent_conversation_id, self.booted_agent_server.session_api_key)
        return StartedRuntime(agent_server, report)

    @property
    def booted_agent_server(self) -> BootedAgentServer:
        if self.booted is None:
            raise RuntimeError("the agent-server boots at the start of the runtime")
        return self.booted

    def start_relay(self) -> EventRelay:
        """The webhook relay the agent-server's config names, made and receiving since its boot;
        it forwards once `ready` is sent, with this conversation's client (a pool sandbox booted
        with its own)."""
        self.relay = self.booted_agent_server.relay
        self.relay.client = self.client
        self.relay.on_rejected = lambda: self.stop.request(StopReason.REJECTED)
        return self.relay

    def start_inbox(self, agent_server: AgentServer, agent_conversation_id: str, session_api_key: str) -> None:
        self.inbox = InboxPoller(
            self.client,
            AgentConversation(agent_server.local_url, agent_conversation_id, session_api_key),
            on_rejected=lambda: self.stop.request(StopReason.REJECTED),
            wait_seconds=self.settings.inbox_wait_seconds,
        )
        self.inbox.start()

    def make_users_named(self, prefix: str) -> SandboxUsers:
        """The sandbox's private directories and users; fails if a user cannot reach its paths."""
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
        with self.timer.step("phase_reports"):
            self.phases.report(phase)

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

    def ready_agent_server(self) -> AgentServer:
        """The booted agent-server, once it answers ``/ready`` from a listener of its own.

        It booted while the repository's code ran. If it is gone (the setup script held its port
        when it came to bind it, say), it starts once more, now that every process of the setup
        user is dead and the agent user's are killed: the repository delays only itself.
        """
        booted = self.booted_agent_server
        assert self.agent_server is not None
        if not self.agent_server.is_running():
            log.warning(
                "the agent-server exited while the workspace was prepared; starting it again",
                extra=fields(exit_code=self.agent_server.process.returncode, log_tail=self.agent_server.log_tail()),
            )
            self.agent_server.stop()
            self.users.end_processes_of(self.users.agent)
            self.start_agent_server_process(booted.session_api_key, (booted.relay.webhook_spec(),))
            assert self.agent_server is not None
        self.agent_server.wait_until_ready(self.settings.agent_server_ready_timeout_seconds, self.stop)
        return self.agent_server

    def start_agent_server_process(self, session_api_key: str, webhooks: tuple[dict[str, Any], ...]) -> AgentServer:
        """``python -I -m openhands.agent_server`` as the agent user (not waited for)."""
        users = self.users
        self._tmux_dir = users.tmux_directory()
        self.agent_server = AgentServer.start(
            AgentServerLaunch(
                python=self.settings.agent_server_python,
                host=self.settings.agent_server_host,
                port=self.settings.agent_server_port,
                session_api_key=session_api_key,
                working_dir=self.settings.workspace_root,
                home_dir=users.agent.home,
                state_dir=users.agent_state,
                log_path=users.bootstrap_dir / "agent-server.log",
                config_path=users.root / "agent-server-config.json",
                tmux_dir=self._tmux_dir,
                env={**agent_environment(self.secrets), **users.agent.environment()},
                run_as=users.agent.run_as,
                webhooks=webhooks,
            )
        )
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
            # The phases before it, so `failed` is the last report; it is worth sending regardless.
            with contextlib.suppress(ControlPlaneRejected, ControlPlaneUnavailable, TimeoutError):
                self.phases.flush()
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
    if os.environ.get("SANDBOX_POOL_ID"):
        from openhands_sandbox.warm import run_pool_sandbox  # the pool's entry point (it imports this module)

        return run_pool_sandbox(os.environ)
    stop = StopController()
    install_stop_signal_handlers(stop)
    return run_conversation(os.environ, stop)


def run_conversation(
    environ: MutableMapping[str, str], stop: StopController, booted: BootedAgentServer | None = None
) -> int:
    """Serve the conversation ``environ`` names: a cold task's environment (the agent-server
    boots first thing), or the one a pool sandbox received as its assignment (with the
    agent-server it booted before)."""
    try:
        settings = SandboxSettings.from_environ(environ)
    except SettingsError as error:
        print(f"openhands-sandbox: {error}", file=sys.stderr)
        return ExitCode.FAILED
    redactor = Redactor([settings.token])
    configure_logging(settings.conversation_id, redactor)
    client = ControlPlaneClient(settings.api_url, settings.token, redactor)
    return Bootstrap(settings, client, stop, redactor, booted).run()


if __name__ == "__main__":
    sys.exit(main())
