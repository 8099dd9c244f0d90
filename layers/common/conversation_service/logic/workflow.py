"""The creation workflow's steps. Each records the conversation's phase before it acts.

State machine: statemachine/create_conversation.asl.json
  InitializeContext -> LaunchSandbox (waits for the sandbox's task token) -> MarkRunning
  any failure -> RecordFailure (ERROR with a typed code, task stopped, slot freed)
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from conversation_service.config import ServiceConfig
from conversation_service.dal.aws import retried_by_the_workflow
from conversation_service.dal.sandbox_tokens import CIPHERTEXT_VARIABLE
from conversation_service.logic.clock import now_epoch_ms, now_iso, seconds_since
from conversation_service.logic.first_message import first_message
from conversation_service.logic.mcp import merge_mcp_config, sealed_mcp_config_of, to_agent_server_mcp
from conversation_service.logic.pool import WarmPool
from conversation_service.logic.runs import execution_name
from conversation_service.logic.start_hops import start_hops
from conversation_service.models.context import (
    SANDBOX_ERROR_CODES,
    AgentConfig,
    AgentContext,
    LLMConfig,
    RepositoryConfig,
    RuntimeConfig,
    SandboxReady,
)
from conversation_service.models.domain import Conversation, ConversationStatus, RuntimeStatus, UserSettings
from conversation_service.models.errors import (
    WORKFLOW_STEP_ERRORS,
    ConversationNotStarting,
    InvalidWorkflowInput,
    SandboxLaunchFailed,
    WorkflowStartRefused,
    WorkflowStartRetryable,
)
from conversation_service.models.workflow_steps import StepFailure
from conversation_service.observability import (
    logger,
    record_conversation_error,
    record_sandbox_start,
    record_time_to_running,
)
from conversation_service.ports import (
    ContextStore,
    ConversationStore,
    SandboxFleet,
    SandboxTokenSealer,
    UserStore,
    WorkflowEngine,
)


def sandbox_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CreationWorkflow:
    def __init__(
        self,
        config: ServiceConfig,
        conversations: ConversationStore,
        users: UserStore,
        context: ContextStore,
        fleet: SandboxFleet,
        engine: WorkflowEngine,
        token_sealer: SandboxTokenSealer,
        pool: WarmPool | None = None,
    ) -> None:
        self._config = config
        self._token_sealer = token_sealer
        self._conversations = conversations
        self._users = users
        self._context = context
        self._fleet = fleet
        self._engine = engine
        self._pool = pool

    # -- the outbox: a new conversation item starts its workflow --------------------------
    def start_for(self, conversation_id: str, user_id: str, run: int = 1) -> None:
        try:
            self._engine.start(execution_name(conversation_id, run), {"conversation_id": conversation_id, "run": run})
        except WorkflowStartRetryable:
            raise
        except WorkflowStartRefused as refused:
            logger.error("workflow start refused", extra={"conversation_id": conversation_id, "code": str(refused)})
            self._conversations.deactivate(
                conversation_id,
                user_id,
                ConversationStatus.ERROR,
                at=now_iso(),
                error_code_value="INTERNAL",
                error_message="The conversation's workflow could not be started; start the conversation again",
                run=run,
            )

    # -- step 1 ---------------------------------------------------------------------------
    @retried_by_the_workflow
    def initialize_context(self, conversation_id: str, run: int | None = None) -> dict[str, str]:
        """`run` (from the execution name) guards every write; None: whatever run is current."""
        conversation = self._starting(conversation_id, run)
        self._phase(conversation_id, RuntimeStatus.INITIALIZING_CONTEXT, run)
        request = conversation.request
        if conversation.request_s3_key:
            request = self._context.get_json(conversation.request_s3_key)
        settings = self._users.get_settings(conversation.user_id)
        # A later run resumes the conversation: it prepares the workspace again (same commit and
        # workspace branch) but does not send the first message, or replay, a second time.
        first_run = conversation.run <= 1
        workspace_branch = conversation.workspace_branch or (
            f"openhands-workspace-{secrets.token_hex(4)}"
            if conversation.repository and not conversation.branch_requested
            else None
        )
        replay_key = None
        if first_run and (replay := request.get("replay_json")):
            replay_key = self._context.put_json(f"conversations/{conversation_id}/replay.json", {"replay_json": replay})
        context = AgentContext(
            conversation_id=conversation_id,
            user_id=conversation.user_id,
            title=conversation.title,
            trigger=conversation.trigger,
            agent=AgentConfig(
                agent=conversation.agent,
                max_iterations=conversation.max_iterations,
                confirmation_mode=conversation.confirmation_mode,
                security_analyzer=conversation.security_analyzer,
            ),
            llm=LLMConfig(model=conversation.llm_model, base_url=conversation.llm_base_url),
            runtime=RuntimeConfig(
                runtime=conversation.runtime,
                image=conversation.sandbox_image,
                setup_script_timeout_seconds=self._config.setup_script_timeout_seconds,
                start_timeout_seconds=self._config.sandbox_start_timeout_seconds,
            ),
            repository=self._repository(conversation),
            workspace_branch=workspace_branch,
            conversation_instructions=request.get("conversation_instructions"),
            sealed_mcp_config=self._sealed_mcp_config(conversation, settings),
            first_message=first_message(request) if first_run else None,
            replay_key=replay_key,
        )
        key = self._context.put_json(f"conversations/{conversation_id}/context.json", context.model_dump(mode="json"))
        if not self._conversations.update_starting(
            conversation_id, run=run, context_key=key, workspace_branch=workspace_branch
        ):
            if self._conversations.get(conversation_id, consistent=True) is None:
                # Deleted while the context was written: its teardown may have purged already.
                self._context.purge_prefix(f"conversations/{conversation_id}/")
            raise ConversationNotStarting(conversation_id)
        return {"context_key": key}

    def _sealed_mcp_config(self, conversation: Conversation, settings: UserSettings | None) -> str | None:
        """The request's MCP servers replace the user's; the service's defaults are added."""
        conversation_id = conversation.conversation_id
        requested = self.requested_mcp_config(conversation)
        servers = to_agent_server_mcp(
            merge_mcp_config(requested or (settings.mcp_config if settings else None), self._config.default_mcp_config)
        )
        return self._users.seal_for(conversation.user_id, servers, conversation_id=conversation_id) if servers else None

    def requested_mcp_config(self, conversation: Conversation) -> dict[str, Any] | None:
        """The MCP servers the creation request gave (opened), from the item or from S3."""
        sealed = sealed_mcp_config_of(self._context, conversation)
        if not sealed:
            return None
        return self._users.open_for(conversation.user_id, sealed, conversation_id=conversation.conversation_id)

    @staticmethod
    def _repository(conversation: Conversation) -> RepositoryConfig | None:
        if not conversation.clone_url:
            return None
        return RepositoryConfig(
            clone_url=conversation.clone_url,
            display_name=conversation.repository or conversation.clone_url,
            name=conversation.repository_name or "repository",
            git_provider=conversation.git_provider or "github",
            branch=conversation.selected_branch or "main",
            commit=conversation.commit or "",
        )

    # -- step 2 ---------------------------------------------------------------------------
    def launch_sandbox(self, conversation_id: str, task_token: str, run: int | None = None) -> dict[str, str]:
        conversation = self._starting(conversation_id, run)
        token = f"{conversation_id}.{secrets.token_urlsafe(32)}"
        if not self._conversations.set_runtime_phase(
            conversation_id,
            RuntimeStatus.STARTING_RUNTIME,
            at=now_iso(),
            run=run,
            task_token=task_token,
            sandbox_token_hash=sandbox_token_hash(token),
            context_delivered=False,
        ):
            raise ConversationNotStarting(conversation_id)
        # Sealed for the task role: RunTask's overrides are visible to ECS readers and CloudTrail.
        environment = {
            "CONVERSATION_ID": conversation_id,
            "SANDBOX_API_URL": self._config.sandbox_api_url,
            CIPHERTEXT_VARIABLE: self._token_sealer.seal(token, conversation_id=conversation_id),
        }
        # Warm: an idle pool sandbox takes exactly this environment from its assignment, so
        # from here on it is the same sandbox a cold RunTask would have started.
        claimed = self._pool.claim(conversation_id, environment) if self._pool is not None else None
        if claimed is not None and claimed.task_arn:  # a claim requires the item's task_arn
            task_arn, start = claimed.task_arn, "warm"
        else:
            task_arn, start = self._fleet.launch(conversation_id, conversation.user_id, environment), "cold"
        if not self._conversations.update_starting(
            conversation_id,
            run=run,
            task_arn=task_arn,
            start=start,
            pool_sandbox_id=claimed.sandbox_id if claimed else None,
            launched_at=now_iso(),
        ):
            self._fleet.stop(task_arn, "conversation closed while its sandbox was launching")
            raise ConversationNotStarting(conversation_id)
        record_sandbox_start(start)
        return {"task_arn": task_arn, "start": start}

    # -- step 3 ---------------------------------------------------------------------------
    @retried_by_the_workflow
    def mark_running(self, conversation_id: str, ready: SandboxReady, run: int | None = None) -> dict[str, str]:
        conversation = self._conversations.get(conversation_id, consistent=True)
        if conversation is None:
            raise ConversationNotStarting(conversation_id)
        running_at = now_iso()
        hops = start_hops(conversation, ready, running_at)
        running = self._conversations.mark_running(
            conversation_id,
            at=running_at,
            last_active_at=now_epoch_ms(),
            run=run,
            agent_server_url=ready.agent_server_url,
            agent_conversation_id=ready.agent_conversation_id,
            workspace_dir=ready.workspace_dir,
            microagents=ready.microagents,
            task_timestamps=self._task_timestamps(conversation),
            start_hops=[hop.model_dump() for hop in hops],
        )
        if not running:
            if conversation.task_arn and run in (None, conversation.run):
                self._fleet.stop(conversation.task_arn, "conversation closed before its sandbox was ready")
            current = self._conversations.get(conversation_id, consistent=True)
            return {"conversation_status": current.conversation_status.value if current else "DELETED"}
        # From this run's QUEUED (a later run's timeline starts again), else from creation.
        record_time_to_running(
            seconds_since(conversation.timeline[0].at if conversation.timeline else conversation.created_at),
            conversation.start,
        )
        logger.info(
            "start hops",
            extra={
                "conversation_id": conversation_id,
                "start": conversation.start,
                "hops_ms": {f"{hop.measured_by}.{hop.hop}": hop.milliseconds for hop in hops},
            },
        )
        return {"conversation_status": ConversationStatus.RUNNING.value}

    def _task_timestamps(self, conversation: Conversation) -> dict[str, str] | None:
        """A cold task's own phases (DescribeTasks: created, image pull, started), so an operator
        sees where a cold minute went. Best effort: RUNNING does not wait on it."""
        if conversation.start != "cold" or not conversation.task_arn:
            return None
        try:
            stamps = self._fleet.phase_timestamps(conversation.task_arn)
        except Exception as error:
            logger.warning("no task timestamps", extra={"problem": type(error).__name__})
            return None
        return {
            name: value.isoformat() if hasattr(value, "isoformat") else str(value) for name, value in stamps.items()
        }

    # -- any failure ------------------------------------------------------------------------
    def record_failure(self, conversation_id: str, error: StepFailure, run: int | None = None) -> dict[str, str]:
        conversation = self._conversations.get(conversation_id, consistent=True)
        if conversation is None:
            return {"error_code": "DELETED"}
        if run is not None and conversation.run != run:
            # An older run failing late: the conversation started again since; leave it alone.
            return {"error_code": "STOPPED"}
        code, message, details = self._classify(conversation, error)
        if conversation.task_arn:
            self._fleet.stop(conversation.task_arn, f"conversation failed: {code}")
        closed = self._conversations.deactivate(
            conversation_id,
            conversation.user_id,
            ConversationStatus.ERROR,
            at=now_iso(),
            error_code_value=code,
            error_message=message,
            error_details=details,
            run=run,
        )
        if closed:
            record_conversation_error(code)
        logger.info(
            "conversation failed", extra={"conversation_id": conversation_id, "error_code": code, "closed": closed}
        )
        return {"error_code": code}

    def _classify(self, conversation: Conversation, error: StepFailure) -> tuple[str, str, dict[str, Any] | None]:
        name = error.Error
        raised = WORKFLOW_STEP_ERRORS.get(name)  # the step's own error, by its class
        cause = _parse_cause(error.Cause)
        phase = conversation.runtime_status
        if name in SANDBOX_ERROR_CODES:
            reported = conversation.sandbox_failure or {}
            if reported.get("error_code") != name:
                reported = {}
            message = str(reported.get("message") or cause.get("message") or f"The sandbox failed during {phase}")
            details = reported.get("details") if isinstance(reported.get("details"), dict) else None
            return name, message, details
        if name == "States.Timeout":
            return (
                "PHASE_TIMEOUT",
                f"The sandbox did not become ready in time; it was still at {phase}. "
                "A long setup script is the usual cause: shorten it or raise SandboxStartTimeoutSeconds.",
                {"phase": phase},
            )
        if name == "States.HeartbeatTimeout":
            return (
                "PHASE_TIMEOUT",
                f"The sandbox stopped reporting during {phase}; it probably crashed or lost its network.",
                {"phase": phase},
            )
        if raised is not None and issubclass(raised, SandboxLaunchFailed):  # Throttled included
            return (
                "SANDBOX_LAUNCH_FAILED",
                "The sandbox could not be launched "
                f"({cause.get('errorMessage', 'ECS refused the task')}); retry later.",
                None,
            )
        if raised is ConversationNotStarting:
            return "STOPPED", "The conversation was closed while it was starting", None
        if raised is InvalidWorkflowInput:  # the fields and their faults, no values (workflow_steps.py)
            reason = str(cause.get("errorMessage") or "a workflow step got invalid input")[:1000]
            return "INTERNAL", f"The conversation could not start: {reason}; create it again.", {"phase": phase}
        return (
            "INTERNAL",
            "An internal error stopped the conversation from starting; create it again.",
            {"phase": phase},
        )

    # -- helpers ------------------------------------------------------------------------------
    def _starting(self, conversation_id: str, run: int | None = None) -> Conversation:
        conversation = self._conversations.get(conversation_id, consistent=True)
        if conversation is None or conversation.conversation_status != ConversationStatus.STARTING:
            raise ConversationNotStarting(conversation_id)
        if run is not None and conversation.run != run:
            raise ConversationNotStarting(conversation_id)
        return conversation

    def _phase(self, conversation_id: str, phase: RuntimeStatus, run: int | None = None) -> None:
        if not self._conversations.set_runtime_phase(conversation_id, phase, at=now_iso(), run=run):
            raise ConversationNotStarting(conversation_id)


def _parse_cause(cause: Any) -> dict[str, Any]:
    if isinstance(cause, dict):
        return cause
    if isinstance(cause, str):
        try:
            parsed = json.loads(cause)
        except json.JSONDecodeError:
            return {"message": cause[:1000]}
        return parsed if isinstance(parsed, dict) else {"message": str(parsed)[:1000]}
    return {}


__all__ = ["CreationWorkflow"]
