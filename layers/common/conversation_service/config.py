"""Service configuration, read once from the environment into a typed model.

Logic never reads `os.environ`: it receives a `ServiceConfig`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from conversation_service.models.environment import FunctionEnvironment
from conversation_service.models.errors import InvalidEnvironment


class ConcurrencyPolicy(StrEnum):
    CLOSE_OLDEST = "close_oldest"  # the spec's behaviour: close the least recently active one
    REJECT = "reject"  # answer 429 CONCURRENCY_LIMIT_REACHED


DEFAULT_PROVIDER_HOSTS: dict[str, str] = {
    "github": "github.com",
    "gitlab": "gitlab.com",
    "bitbucket": "bitbucket.org",
    "azure_devops": "dev.azure.com",
}


class ServiceConfig(BaseModel):
    conversations_table: str = "conversations"
    users_table: str = "users"
    idempotency_table: str = "idempotency"
    # The channel to a running conversation: its events, its inbox, its workspace (logic/agent_channel.py).
    channel_table: str = "conversation-channel"
    context_bucket: str = "conversation-context"
    secrets_key_id: str = "alias/conversation-secrets"
    state_machine_arn: str = ""

    max_active_conversations: int = Field(default=3, ge=1, le=1000)
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.CLOSE_OLDEST
    retry_after_seconds: int = 30

    # Git: which hosts a repository may live on, per provider (enterprise hosts are added here).
    git_provider_hosts: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PROVIDER_HOSTS))
    git_extra_hosts: list[str] = Field(default_factory=list)
    git_timeout_seconds: float = 10.0
    # Only the local stack turns this on: loopback hosts, plain http/git and local paths.
    allow_local_repositories: bool = False
    # Local stack only, like git's url.<base>.insteadOf: {"https://github.com/": "http://127.0.0.1:8765/"}.
    git_url_rewrites: dict[str, str] = Field(default_factory=dict)

    default_runtime: str = "fargate"
    idempotency_ttl_seconds: int = 86400  # a message's Idempotency-Key (logic/idempotency.py)
    # The image the sandbox task definition runs (both are the template's SandboxImage): what
    # every conversation records; users cannot choose another (logic/settings.py says why).
    default_sandbox_image: str = "ghcr.io/all-hands-ai/runtime:latest"
    setup_script_timeout_seconds: int = 600
    sandbox_start_timeout_seconds: int = 1800
    # A conversation STARTING and untouched for this long has no workflow left to finish it
    # (the state machine's own ceiling is 3600 s): the sweeper closes it as ERROR.
    stale_start_seconds: int = 3900
    # MCP servers every conversation gets, added after the request's (or the user's) own.
    default_mcp_config: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)

    # Sandbox launch (ECS Fargate).
    sandbox_cluster_arn: str = ""
    sandbox_task_definition_arn: str = ""
    sandbox_container_name: str = "sandbox"
    sandbox_subnet_ids: list[str] = Field(default_factory=list)
    sandbox_security_group_ids: list[str] = Field(default_factory=list)
    sandbox_assign_public_ip: bool = False
    sandbox_api_url: str = ""

    # The warm pool (docs/architecture.md "The warm pool"): sandboxes booted ahead of demand.
    pool_table: str = ""
    pool_target_idle: int = Field(default=0, ge=0, le=1000)
    # An idle sandbox older than this is retired (its image and memory grow stale).
    pool_max_idle_seconds: int = Field(default=3600, ge=60)
    # An idle sandbox polls for its assignment at least this often; silent longer: replaced.
    pool_heartbeat_stale_seconds: int = Field(default=60, ge=5)
    # A pool sandbox that has not reported idle this long after RunTask is retired.
    pool_boot_timeout_seconds: int = Field(default=600, ge=30)
    # RunTask calls one reconcile may make (the rest waits for the next run or nudge).
    pool_launches_per_reconcile: int = Field(default=10, ge=1, le=100)
    # The longest `wait` of an idle sandbox's long poll, and how often it re-reads its item.
    pool_assignment_wait_seconds: float = Field(default=20.0, gt=0, le=25)
    pool_assignment_poll_seconds: float = Field(default=0.1, gt=0, le=5)
    # The reconciler, invoked asynchronously after each claim (empty: no nudge).
    pool_reconciler_function: str = ""
    # Where a ready sandbox's agent-server may be: "task", the private IPv4 of its ECS task's
    # network attachment (DescribeTasks); "loopback", 127.0.0.1 (the local stack's processes).
    sandbox_agent_server_address: Literal["task", "loopback"] = "task"
    # The KMS key the sandbox token is sealed with for its task (only the task role may Decrypt).
    sandbox_token_key_id: str = "alias/sandbox-token"  # noqa: S105 - a key alias
    # The local stack runs as one user without keys, as OpenHands does on a laptop.
    local_user_id: str | None = None

    # Lifecycle events (docs/events.md): the bus status changes go to, the sources trusted to
    # create conversations with a CreateConversation event, and where refused events go.
    event_bus_name: str = ""
    trusted_event_sources: list[str] = Field(default_factory=list)
    create_conversation_dlq_url: str = ""

    # Caps of the channel (docs/sandbox-protocol.md): one event, after redaction; a conversation's
    # transcript, in events and in bytes; the diff a workspace snapshot keeps.
    max_event_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_events_per_conversation: int = Field(default=20_000, ge=1)
    max_event_bytes_per_conversation: int = Field(default=256 * 1024 * 1024, ge=1024)
    max_workspace_diff_bytes: int = Field(default=1024 * 1024, ge=1024)

    @field_validator("git_provider_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return {**DEFAULT_PROVIDER_HOSTS, **json.loads(value)} if value else DEFAULT_PROVIDER_HOSTS
        return value

    @field_validator("default_mcp_config", "git_url_rewrites", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("git_extra_hosts", "sandbox_subnet_ids", "sandbox_security_group_ids", mode="before")
    @classmethod
    def _parse_extra_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip().lower() for host in value.split(",") if host.strip()]
        return value

    @field_validator("trusted_event_sources", mode="before")
    @classmethod
    def _parse_sources(cls, value: object) -> object:
        if isinstance(value, str):  # event sources are case-sensitive: no lower()
            return [source.strip() for source in value.split(",") if source.strip()]
        return value

    @property
    def allowed_git_hosts(self) -> frozenset[str]:
        return frozenset({*self.git_provider_hosts.values(), *self.git_extra_hosts})

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> ServiceConfig:
        env = os.environ if environ is None else environ
        values = {
            field: env[field.upper()] for field in cls.model_fields if field.upper() in env and env[field.upper()] != ""
        }
        return cls.model_validate(values)


@lru_cache(maxsize=1)
def get_config() -> ServiceConfig:
    return ServiceConfig.from_environment()


def require_environment[Environment: FunctionEnvironment](
    model: type[Environment], environ: Mapping[str, str] | None = None
) -> Environment:
    """The function's required variables (models/environment.py), checked at import: the cold
    start fails naming every variable that is missing, empty or malformed (values are not echoed)."""
    env = os.environ if environ is None else environ
    missing = [name for name in model.model_fields if not env.get(name, "").strip()]
    if missing:
        raise InvalidEnvironment(
            f"{model.__name__}: required environment variable(s) missing or empty: {', '.join(missing)}"
        )
    try:
        return model.model_validate({name: env[name] for name in model.model_fields})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
        raise InvalidEnvironment(f"{model.__name__}: malformed environment variable(s): {problems}") from None
