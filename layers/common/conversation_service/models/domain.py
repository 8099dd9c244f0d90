"""Domain model: conversations, user settings and the statuses they move through."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from conversation_service.models.base import ServiceModel


class ConversationStatus(StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    ARCHIVED = "ARCHIVED"
    ERROR = "ERROR"


ACTIVE_STATUSES = frozenset({ConversationStatus.STARTING, ConversationStatus.RUNNING})


class RuntimeStatus(StrEnum):
    """OpenHands' runtime status ids, plus the finer phases our sandbox reports."""

    QUEUED = "STATUS$QUEUED"
    INITIALIZING_CONTEXT = "STATUS$INITIALIZING_CONTEXT"
    STARTING_RUNTIME = "STATUS$STARTING_RUNTIME"
    RUNTIME_STARTED = "STATUS$RUNTIME_STARTED"
    SETTING_UP_WORKSPACE = "STATUS$SETTING_UP_WORKSPACE"
    RUNNING_SETUP_SCRIPT = "STATUS$RUNNING_SETUP_SCRIPT"
    SETTING_UP_GIT_HOOKS = "STATUS$SETTING_UP_GIT_HOOKS"
    STARTING_AGENT_SERVER = "STATUS$STARTING_AGENT_SERVER"
    READY = "STATUS$READY"
    STOPPED = "STATUS$STOPPED"
    ERROR = "STATUS$ERROR"


class ConversationTrigger(StrEnum):
    GUI = "gui"
    API = "api"
    SUGGESTED_TASK = "suggested_task"
    MICROAGENT_MANAGEMENT = "microagent_management"


KNOWN_AGENTS = frozenset({"CodeActAgent", "BrowsingAgent", "VisualBrowsingAgent", "ReadOnlyAgent", "LocAgent"})


class AgentDefaults(ServiceModel):
    """The spec's defaults; user settings override them."""

    agent: str = "CodeActAgent"
    max_iterations: int = 100
    confirmation_mode: bool = False
    security_analyzer: str | None = None


class UserSecrets(ServiceModel):
    """Decrypted secrets: held in memory only, never logged, never returned."""

    llm_api_key: str | None = Field(default=None, repr=False)
    provider_tokens: dict[str, str] = Field(default_factory=dict, repr=False)


class UserSettings(ServiceModel):
    """A user's stored settings. Secrets stay sealed (KMS) until a caller opens them."""

    user_id: str
    mcp_config: dict[str, Any] | None = None
    agent: str | None = None
    max_iterations: int | None = None
    confirmation_mode: bool | None = None
    security_analyzer: str | None = None
    llm_model: str | None = None
    llm_base_url: str | None = None
    sandbox_base_container_image: str | None = None
    max_active_conversations: int | None = None
    # EventBridge sources (integrations) whose CreateConversation events may create conversations
    # for this user; none by default (docs/events.md).
    authorized_event_sources: list[str] = Field(default_factory=list)
    llm_api_key_set: bool = False
    provider_tokens_set: list[str] = Field(default_factory=list)
    sealed_secrets: str | None = Field(default=None, repr=False)
    updated_at: str | None = None


class ResolvedRepository(ServiceModel):
    """A repository checked at request time: where it is and which commit was seen."""

    display_name: str  # owner/repo, or the URL for enterprise and local repositories
    clone_url: str
    name: str  # directory name in the workspace
    git_provider: str
    branch: str  # the checked-out branch (the requested one, or the default branch)
    branch_requested: bool
    commit: str


class TimelineEntry(ServiceModel):
    phase: str
    at: str


class StartHop(ServiceModel):
    """One hop of a start, POST to RUNNING (logic/start_hops.py): the service's hops come from
    its own timestamps and add up to QUEUED -> READY; the sandbox's split its part."""

    hop: str
    milliseconds: int
    measured_by: Literal["service", "sandbox"]


class Conversation(ServiceModel):
    conversation_id: str
    user_id: str
    conversation_status: ConversationStatus
    runtime_status: RuntimeStatus
    title: str
    trigger: ConversationTrigger
    created_at: str
    updated_at: str
    last_active_at: int  # epoch milliseconds, orders the least recently active
    # 1 for the first start; each POST .../start adds one. The run names the workflow execution
    # (`<id>`, then `<id>-<run>`) and guards every workflow write against an older run.
    run: int = 1
    repository: str | None = None
    clone_url: str | None = None
    repository_name: str | None = None
    git_provider: str | None = None
    selected_branch: str | None = None
    branch_requested: bool = False
    commit: str | None = None
    agent: str
    max_iterations: int
    confirmation_mode: bool
    security_analyzer: str | None = None
    llm_model: str
    llm_base_url: str | None = None
    sandbox_image: str
    runtime: str
    status_reason: str | None = None  # msg_id of the last status change (e.g. too many conversations)
    error_code: str | None = None
    error_message: str | None = None
    error_details: dict[str, Any] | None = None
    timeline: list[TimelineEntry] = Field(default_factory=list)
    request: dict[str, Any] = Field(default_factory=dict)  # the creation request, secrets excluded
    request_s3_key: str | None = None  # set when the request was too large to keep on the item
    # Created with an Idempotency-Key: the id is derived from (user, key); this is the body's digest.
    request_fingerprint: str | None = None
    execution_arn: str | None = None
    task_arn: str | None = None
    start: Literal["warm", "cold"] | None = None  # this run's sandbox: claimed from the pool, or RunTask
    pool_sandbox_id: str | None = None
    # A cold task's createdAt / pullStartedAt / pullStoppedAt / startedAt (DescribeTasks), ISO.
    task_timestamps: dict[str, str] | None = None
    # When LaunchSandbox had a sandbox (claimed or RunTask answered), and the hops of the start.
    launched_at: str | None = None
    start_hops: list[StartHop] | None = None
    agent_server_url: str | None = None
    agent_conversation_id: str | None = None
    microagents: list[str] = Field(default_factory=list)
    workspace_dir: str | None = None
    workspace_branch: str | None = None  # created for the first run, checked out again by later runs
    # Workflow plumbing, never shown to users.
    context_key: str | None = None
    task_token: str | None = Field(default=None, repr=False)
    sandbox_token_hash: str | None = Field(default=None, repr=False)
    context_delivered: bool = False
    # What the sandbox reported when it failed: kept here, not in Step Functions history,
    # since it carries the repository's own setup output.
    sandbox_failure: dict[str, Any] | None = None
    # The request's mcp_config (it may hold server API keys and env), sealed with KMS.
    sealed_mcp_config: str | None = Field(default=None, repr=False)
    # ...or, when sealed it is too large for the item (DynamoDB's 400 KB), where in S3 it is.
    sealed_mcp_config_key: str | None = None
    sealed_session_api_key: str | None = Field(default=None, repr=False)
    # The agent-server's execution status, as the sandbox reports it (models/channel.py AgentStatus),
    # and when a pending confirmation was answered (cleared when the agent moves on).
    agent_status: str | None = None
    agent_status_at: str | None = None
    confirmation_answered_at: str | None = None
    # Set when an inactive conversation is stopped again: the stream consumer re-checks that
    # nothing of it still runs.
    teardown_requested_at: str | None = None

    @property
    def is_active(self) -> bool:
        return self.conversation_status in ACTIVE_STATUSES


@dataclass(frozen=True)
class CreationSnapshot:
    """What a create needs to know before it writes, read in one BatchGetItem."""

    settings: UserSettings | None
    active_count: int
    existing: Conversation | None  # the conversation already stored under a keyed create's id
