"""Request and response bodies of the HTTP API, as the spec names them."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from conversation_service.json_limits import MAX_JSON_DEPTH, nesting_depth
from conversation_service.models.base import ServiceModel, StrictModel
from conversation_service.models.domain import ConversationStatus, StartHop, TimelineEntry


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class GitProvider(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    BITBUCKET = "bitbucket"
    AZURE_DEVOPS = "azure_devops"
    ENTERPRISE = "enterprise"


# The spec writes "GITHUB"; OpenHands writes "github". Both are accepted.
GitProviderField = Annotated[GitProvider, BeforeValidator(_lower)]


# An EventBridge `source`: letters, digits and . - _ / (as integrations name themselves).
EVENT_SOURCE_PATTERN = r"^[A-Za-z0-9._/-]+$"


class SuggestedTaskType(StrEnum):
    MERGE_CONFLICTS = "MERGE_CONFLICTS"
    FAILING_CHECKS = "FAILING_CHECKS"
    UNRESOLVED_COMMENTS = "UNRESOLVED_COMMENTS"
    OPEN_ISSUE = "OPEN_ISSUE"
    OPEN_PR = "OPEN_PR"
    CREATE_MICROAGENT = "CREATE_MICROAGENT"


class SuggestedTask(StrictModel):
    git_provider: GitProviderField | None = None
    issue_number: int = Field(ge=0)
    repo: str = Field(min_length=1, max_length=300)
    title: str = Field(max_length=1000)
    task_type: SuggestedTaskType


class CreateMicroagent(StrictModel):
    repo: str = Field(min_length=1, max_length=300)
    git_provider: GitProviderField | None = None
    title: str | None = Field(default=None, max_length=1000)


class MCPRemoteServer(StrictModel):
    name: str | None = Field(default=None, max_length=200)
    url: str = Field(min_length=1, max_length=2000)
    api_key: str | None = Field(default=None, max_length=4000, repr=False)
    timeout: int | None = Field(default=None, ge=1, le=3600)


class MCPStdioServer(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    command: str = Field(min_length=1, max_length=2000)
    args: list[str] = Field(default_factory=list, max_length=100)
    # Names non-empty: an empty name is no environment variable, and DynamoDB refuses an empty
    # map key (moto stores it and then cannot read the item back: a 500 on every later read).
    env: dict[Annotated[str, Field(min_length=1, max_length=1000)], str] = Field(default_factory=dict, repr=False)


# An MCP configuration larger than this (as JSON) is refused. Larger than a DynamoDB item once
# sealed, it is stored sealed in S3; the sandbox receives it whole in its context.
MAX_MCP_CONFIG_BYTES = 1_000_000


class MCPConfig(StrictModel):
    sse_servers: list[MCPRemoteServer] = Field(default_factory=list, max_length=50)
    stdio_servers: list[MCPStdioServer] = Field(default_factory=list, max_length=50)
    shttp_servers: list[MCPRemoteServer] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _within_size(self) -> MCPConfig:
        if len(json.dumps(self.model_dump(mode="json"))) > MAX_MCP_CONFIG_BYTES:
            raise ValueError(f"the MCP configuration is larger than {MAX_MCP_CONFIG_BYTES} bytes")
        return self


class CreateConversationRequest(StrictModel):
    """`POST /api/conversations`: every field optional, unknown fields refused."""

    repository: str | None = Field(default=None, max_length=500, description="owner/repo or an https clone URL")
    git_provider: GitProviderField | None = Field(default=None, description="github (default), gitlab, ...")
    selected_branch: str | None = Field(default=None, max_length=255)
    initial_user_msg: str | None = Field(default=None, max_length=100_000)
    image_urls: list[Annotated[str, Field(max_length=2_000_000)]] | None = Field(default=None, max_length=20)
    replay_json: str | None = Field(default=None, max_length=5_000_000)
    suggested_task: SuggestedTask | None = None
    create_microagent: CreateMicroagent | None = None
    conversation_instructions: str | None = Field(default=None, max_length=50_000)
    mcp_config: MCPConfig | None = None

    @field_validator("replay_json")
    @classmethod
    def _replay_is_readable_json(cls, value: str | None) -> str | None:
        """Parsed later (the first message of a trajectory): it must parse, and not too deep."""
        if value is None:
            return value
        if nesting_depth(value) > MAX_JSON_DEPTH:
            raise ValueError(f"replay_json nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError("replay_json is not JSON") from None
        return value


class CreateConversationResponse(ServiceModel):
    status: Literal["ok"] = "ok"
    conversation_id: str
    conversation_status: ConversationStatus


class ErrorBody(ServiceModel):
    status: Literal["error"] = "error"
    message: str
    msg_id: str


class ConversationView(ServiceModel):
    """What the owner sees of a conversation: status, place in the workflow, no secrets."""

    conversation_id: str
    title: str
    conversation_status: ConversationStatus
    runtime_status: str
    status_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_details: dict[str, Any] | None = None
    repository: str | None = None
    git_provider: str | None = None
    selected_branch: str | None = None
    commit: str | None = None
    trigger: str
    agent: str
    max_iterations: int
    confirmation_mode: bool
    security_analyzer: str | None = None
    llm_model: str
    runtime: str
    sandbox_image: str
    created_at: str
    updated_at: str
    timeline: list[TimelineEntry]
    start: Literal["warm", "cold"] | None = Field(
        default=None, description="warm: an idle pool sandbox was claimed; cold: a new task was started"
    )
    task_timestamps: dict[str, str] | None = Field(
        default=None,
        description="cold starts on ECS: the task's createdAt, pullStartedAt, pullStoppedAt, startedAt",
    )
    start_hops: list[StartHop] | None = Field(
        default=None,
        description="Where the start's time went, POST to RUNNING, in order: the service's hops (they add up "
        "to QUEUED -> READY) and the sandbox's own steps within in_sandbox (docs/performance.md)",
    )
    agent_server_url: str | None = None
    agent_conversation_id: str | None = None
    microagents: list[str] = Field(default_factory=list)
    agent_status: str | None = Field(
        default=None,
        description="The agent's execution status: idle, running, paused, waiting_for_confirmation, finished, "
        "error, stuck (null until the sandbox reports one)",
    )


class SettingsUpdate(StrictModel):
    """`POST /api/settings`: fields left out keep their value; "" clears a secret."""

    agent: str | None = Field(default=None, max_length=100)
    max_iterations: int | None = Field(default=None, ge=1, le=10_000)
    confirmation_mode: bool | None = None
    security_analyzer: str | None = Field(default=None, max_length=100)
    llm_model: str | None = Field(default=None, min_length=1, max_length=200)
    llm_base_url: str | None = Field(default=None, max_length=2000)
    # repr=False: route arguments are logged at DEBUG (Powertools) and must not carry secrets.
    llm_api_key: str | None = Field(default=None, max_length=4000, repr=False)
    provider_tokens: dict[GitProviderField, Annotated[str, Field(max_length=10_000)]] | None = Field(
        default=None, repr=False
    )
    # Enterprise git hosts each have their own token: {"git.corp.example": "<token>"}.
    enterprise_tokens: dict[Annotated[str, Field(max_length=253)], Annotated[str, Field(max_length=10_000)]] | None = (
        Field(default=None, repr=False, max_length=50)
    )
    sandbox_base_container_image: str | None = Field(
        default=None,
        max_length=500,
        description="Only the image every sandbox runs is accepted (see the GET answer); any other is refused",
    )
    authorized_event_sources: (
        list[Annotated[str, Field(min_length=1, max_length=256, pattern=EVENT_SOURCE_PATTERN)]] | None
    ) = Field(
        default=None,
        max_length=20,
        description="EventBridge sources (your integrations) allowed to create conversations for you with a "
        "CreateConversation event; [] allows none (the default)",
    )


class SettingsView(ServiceModel):
    agent: str
    max_iterations: int
    confirmation_mode: bool
    security_analyzer: str | None
    llm_model: str | None
    llm_base_url: str | None
    llm_api_key_set: bool
    provider_tokens_set: dict[str, bool]
    sandbox_base_container_image: str = Field(description="The image every sandbox runs (the stack's SandboxImage)")
    authorized_event_sources: list[str] = Field(default_factory=list)
    updated_at: str | None


class OkBody(ServiceModel):
    status: Literal["ok"] = "ok"
