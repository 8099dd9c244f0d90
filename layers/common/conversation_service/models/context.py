"""The agent context a conversation starts with, and what crosses the sandbox channel."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from conversation_service.models.base import ServiceModel


class AgentConfig(ServiceModel):
    agent: str
    max_iterations: int
    confirmation_mode: bool
    security_analyzer: str | None = None


class LLMConfig(ServiceModel):
    model: str
    base_url: str | None = None


class RuntimeConfig(ServiceModel):
    runtime: str
    image: str
    setup_script_timeout_seconds: int
    start_timeout_seconds: int


class RepositoryConfig(ServiceModel):
    clone_url: str
    display_name: str
    name: str
    git_provider: str
    branch: str
    commit: str


class FirstMessage(ServiceModel):
    text: str
    image_urls: list[str] = Field(default_factory=list)


class AgentContext(ServiceModel):
    """Defaults <- user settings <- request, for one conversation. Holds no secrets of ours;
    kept in S3 (it can be large), referenced by key."""

    conversation_id: str
    user_id: str
    title: str
    trigger: str
    agent: AgentConfig
    llm: LLMConfig
    runtime: RuntimeConfig
    repository: RepositoryConfig | None = None
    workspace_branch: str | None = None  # created when the user named no branch
    conversation_instructions: str | None = None
    # The MCP servers in the agent-server's shape, sealed with KMS: they may carry API keys.
    sealed_mcp_config: str | None = None
    first_message: FirstMessage | None = None
    replay_key: str | None = None


# --- the sandbox channel (docs/sandbox-protocol.md) ----------------------------------------


class SandboxRepository(ServiceModel):
    clone_url: str
    name: str
    branch: str
    commit: str
    username: str | None = None
    password: str | None = Field(default=None, repr=False)


class SandboxLLM(ServiceModel):
    model: str
    api_key: str | None = Field(default=None, repr=False)
    base_url: str | None = None


class SandboxContext(ServiceModel):
    conversation_id: str
    repository: SandboxRepository | None
    workspace_branch: str | None
    agent: AgentConfig
    llm: SandboxLLM
    session_api_key: str = Field(repr=False)
    first_message: FirstMessage | None
    conversation_instructions: str | None
    mcp_config: dict[str, Any]
    setup_script_timeout_seconds: int


SANDBOX_PHASES = (
    "STATUS$RUNTIME_STARTED",
    "STATUS$SETTING_UP_WORKSPACE",
    "STATUS$RUNNING_SETUP_SCRIPT",
    "STATUS$SETTING_UP_GIT_HOOKS",
    "STATUS$STARTING_AGENT_SERVER",
)
SANDBOX_ERROR_CODES = (
    "REPO_AUTH_FAILED",
    "REF_NOT_FOUND",
    "CLONE_FAILED",
    "SETUP_SCRIPT_FAILED",
    "GIT_HOOKS_FAILED",
    "RUNTIME_UNHEALTHY",
    "INTERNAL",
)


# Caps on what a sandbox may report: everything it sends is written by code the repository
# controls, and ends up in the conversation's item, its events and the API's answers.
MAX_SANDBOX_REPORT_BYTES = 64 * 1024
MAX_SANDBOX_REPORT_DEPTH = 8
MAX_SANDBOX_DETAILS_BYTES = 16 * 1024
MAX_SANDBOX_DETAILS_DEPTH = 4
AgentConversationId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
MicroagentName = Annotated[str, Field(min_length=1, max_length=200)]


def json_nesting_depth(value: Any, limit: int) -> int:
    """How deep a parsed JSON value nests, counted up to `limit + 1` (iterative: it cannot run
    out of stack however deep the value is)."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                break
            pending.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


SandboxStep = Literal[
    "assignment_to_start",
    "process_to_start",
    "phase_reports",
    "context_fetch",
    "users",
    "clone",
    "setup_script",
    "git_hooks",
    "head_commit",
    "agent_server",
    "conversation_create",
]
"""The steps a sandbox times before `ready`, in the order they run (sandbox/openhands_sandbox/timings.py)."""
StepSeconds = Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)]


class SandboxEvent(ServiceModel):
    """One report from a sandbox. Fields beyond `type` depend on it."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["phase", "heartbeat", "ready", "failed"]
    phase: str | None = Field(default=None, max_length=100)
    agent_server_url: str | None = Field(default=None, max_length=300)
    agent_conversation_id: AgentConversationId | None = None
    workspace_dir: str | None = Field(default=None, max_length=1000)
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")
    microagents: list[MicroagentName] = Field(default_factory=list, max_length=500)
    error_code: str | None = Field(default=None, max_length=100)
    message: str | None = Field(default=None, max_length=4000)
    details: dict[str, Any] | None = None
    # `ready` from a warm sandbox: the session key its agent-server booted with (it made the key
    # itself before it had a conversation). Sealed onto the conversation; never in task output.
    session_api_key: str | None = Field(default=None, min_length=16, max_length=200, repr=False)
    # `ready`: seconds per step of the sandbox's own, for the start's hops (no secret: durations).
    timings: dict[SandboxStep, StepSeconds] | None = None

    @field_validator("details")
    @classmethod
    def _bounded_details(cls, details: dict[str, Any] | None) -> dict[str, Any] | None:
        if details is None:
            return None
        if json_nesting_depth(details, MAX_SANDBOX_DETAILS_DEPTH) > MAX_SANDBOX_DETAILS_DEPTH:
            raise ValueError(f"details may nest at most {MAX_SANDBOX_DETAILS_DEPTH} levels")
        if len(json.dumps(details, default=str)) > MAX_SANDBOX_DETAILS_BYTES:
            raise ValueError(f"details may be at most {MAX_SANDBOX_DETAILS_BYTES} bytes of JSON")
        return details


class SandboxReady(ServiceModel):
    """What a ready sandbox hands the workflow (task output: no secrets). `agent_server_url` is
    the checked, normalised `http://<the task's own address>:<port>`."""

    agent_server_url: str = Field(max_length=300)
    agent_conversation_id: AgentConversationId
    workspace_dir: str | None = Field(default=None, max_length=1000)
    commit: str | None = None
    microagents: list[MicroagentName] = Field(default_factory=list, max_length=500)
    timings: dict[SandboxStep, StepSeconds] = Field(default_factory=dict)
    """The sandbox's own steps (seconds), as it reported them with `ready`."""
    reported_at: str | None = None
    """When the service received `ready` (ISO): where the workflow's last hop begins."""
