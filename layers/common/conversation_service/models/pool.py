"""The warm pool: sandboxes started ahead of demand, each serving at most one conversation."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from conversation_service.models.base import ServiceModel

POOL_SANDBOX_PREFIX = "pool-"
"""A pool sandbox's id (`pool-<24 hex>`) is its task's `startedBy`; a conversation id never
starts with it, so the sandbox watch tells the two kinds of task apart."""


class PoolState(StrEnum):
    LAUNCHING = "LAUNCHING"  # RunTask done; the agent-server is booting
    IDLE = "IDLE"  # booted and healthy, polling for an assignment: claimable
    CLAIMED = "CLAIMED"  # assigned to one conversation; never returns to the pool
    RETIRED = "RETIRED"  # stopped by the reconciler (too old, outdated, silent, surplus)
    DEAD = "DEAD"  # its task stopped by itself before any claim

    @property
    def is_live(self) -> bool:
        """Counts towards the pool's size (and carries the ByLiveState index key)."""
        return self in (PoolState.LAUNCHING, PoolState.IDLE)


class PoolSandbox(ServiceModel):
    sandbox_id: str
    pool_status: PoolState
    launched_at: int  # epoch ms, the ByLiveState index's sort key
    task_definition_arn: str
    credential_hash: str = Field(repr=False)
    task_arn: str | None = None
    idle_since: int | None = None
    heartbeat_at: int | None = None
    conversation_id: str | None = None
    claimed_at: int | None = None
    # What the conversation's sandbox would get in RunTask (its id, the API URL, its token in
    # the form LaunchSandbox uses), handed over once on the pool credential, then removed.
    assignment: dict[str, str] | None = Field(default=None, repr=False)
    assignment_delivered_at: int | None = None
    ended_reason: str | None = None


class Assignment(ServiceModel):
    """`GET /sandbox/v1/pool/assignment`: null until a conversation claimed this sandbox."""

    assignment: dict[str, str] | None = Field(default=None, repr=False)


class PoolIdleReport(ServiceModel):
    """`POST /sandbox/v1/pool/idle`: the agent-server has booted and answers /ready."""

    type: Literal["idle"] = "idle"
    boot_seconds: float | None = Field(default=None, ge=0, le=86400)


class ReconcileReport(ServiceModel):
    idle: int
    launching: int
    launched: list[str] = Field(default_factory=list)
    retired: dict[str, str] = Field(default_factory=dict)  # sandbox id -> reason
    launch_errors: list[str] = Field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return self.model_dump()
