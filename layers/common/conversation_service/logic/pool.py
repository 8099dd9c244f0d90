"""The warm pool: claim an idle sandbox for a conversation, keep the pool at its target.

An idle pool sandbox has booted the agent-server (with a session key it made itself) and holds
nothing of any conversation: no token, no context, no secret of a user. It long-polls
`GET /sandbox/v1/pool/assignment` with its pool credential, which opens that and nothing else.

`claim` (LaunchSandbox) moves one IDLE item to CLAIMED in a conditional write and stores on it
the environment a cold sandbox would get in RunTask; the sandbox's poll takes it (once) and the
sandbox then runs exactly as a cold one. A claimed sandbox never returns to the pool.

`reconcile` (scheduled, and nudged after each claim and each idle sandbox's death) retires what
is outdated, too old, silent or surplus, and launches what is missing. It never claims.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import time

from conversation_service.config import ServiceConfig
from conversation_service.dal.sandbox_tokens import POOL_CIPHERTEXT_VARIABLE
from conversation_service.logic.clock import now_epoch_ms
from conversation_service.models.errors import (
    InvalidRequest,
    PoolSandboxGone,
    SandboxLaunchFailed,
    SandboxLaunchThrottled,
    Unauthorized,
)
from conversation_service.models.pool import (
    POOL_SANDBOX_PREFIX,
    PoolSandbox,
    PoolState,
    ReconcileReport,
)
from conversation_service.observability import logger, record_pool_claim_latency, record_pool_size
from conversation_service.ports import PoolStore, ReconcilerNudge, SandboxFleet, SandboxTokenSealer

CLAIM_CANDIDATES = 10
"""Idle sandboxes one claim tries (shuffled, so racing claims spread instead of all trying the
oldest first); losing every try falls back to a cold start."""


def credential_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


class WarmPool:
    def __init__(
        self,
        config: ServiceConfig,
        store: PoolStore,
        fleet: SandboxFleet,
        token_sealer: SandboxTokenSealer,
        nudge: ReconcilerNudge | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._fleet = fleet
        self._token_sealer = token_sealer
        self._nudge = nudge

    @property
    def enabled(self) -> bool:
        return bool(self._config.pool_table) and self._config.pool_target_idle > 0

    # -- the workflow's side -----------------------------------------------------------------
    def claim(self, conversation_id: str, assignment: dict[str, str]) -> PoolSandbox | None:
        """An idle sandbox now serving `conversation_id`, or None (cold start then)."""
        if not self.enabled:
            return None
        started = time.monotonic()
        now = now_epoch_ms()
        fresh_after = now - int(self._config.pool_assignment_wait_seconds * 1000) - 10_000
        definition = self._config.sandbox_task_definition_arn
        candidates = [
            sandbox
            for sandbox in self._store.live(PoolState.IDLE, limit=100)
            if sandbox.task_definition_arn == definition and (sandbox.heartbeat_at or 0) >= fresh_after
        ]
        random.shuffle(candidates)
        claimed = None
        for candidate in candidates[:CLAIM_CANDIDATES]:
            claimed = self._store.claim(
                candidate.sandbox_id,
                conversation_id=conversation_id,
                assignment=assignment,
                now_ms=now,
                heartbeat_after_ms=fresh_after,
                task_definition_arn=definition,
            )
            if claimed is not None:
                break
        latency_ms = (time.monotonic() - started) * 1000
        record_pool_claim_latency(latency_ms, (now - (claimed.idle_since or now)) / 1000 if claimed else None)
        logger.info(
            "pool claim",
            extra={
                "conversation_id": conversation_id,
                "start": "warm" if claimed else "cold",
                "pool_sandbox_id": claimed.sandbox_id if claimed else None,
                "candidates": len(candidates),
                "claim_ms": round(latency_ms, 1),
            },
        )
        self.nudge()
        return claimed

    def nudge(self) -> None:
        """Ask the reconciler to refill now rather than at its next scheduled run."""
        if self._nudge is not None and self.enabled:
            self._nudge.nudge()

    # -- the reconciler -----------------------------------------------------------------------
    def reconcile(self) -> ReconcileReport:
        now = now_epoch_ms()
        config = self._config
        idle = self._store.live(PoolState.IDLE)
        launching = self._store.live(PoolState.LAUNCHING)
        retired: dict[str, str] = {}
        kept_idle: list[PoolSandbox] = []
        kept_launching: list[PoolSandbox] = []
        for sandbox in idle:
            reason = self._retirement_reason(sandbox, now)
            if reason is None:
                kept_idle.append(sandbox)
            elif self._retire(sandbox, reason, now):
                retired[sandbox.sandbox_id] = reason
        for sandbox in launching:
            reason = self._retirement_reason(sandbox, now)
            if reason is None:
                kept_launching.append(sandbox)
            elif self._retire(sandbox, reason, now):
                retired[sandbox.sandbox_id] = reason
        # Too many (the target went down): the oldest idle go first, then the newest launching.
        surplus = len(kept_idle) + len(kept_launching) - config.pool_target_idle
        for sandbox in [*kept_idle, *reversed(kept_launching)][: max(surplus, 0)]:
            if self._retire(sandbox, "more than PoolTargetIdle", now):
                retired[sandbox.sandbox_id] = "more than PoolTargetIdle"
                (kept_idle if sandbox in kept_idle else kept_launching).remove(sandbox)
        report = ReconcileReport(idle=len(kept_idle), launching=len(kept_launching), retired=retired)
        missing = config.pool_target_idle - len(kept_idle) - len(kept_launching)
        for _ in range(min(max(missing, 0), config.pool_launches_per_reconcile)):
            try:
                report.launched.append(self.launch_one())
            except SandboxLaunchThrottled as error:
                # Back off: no more RunTask this round; the next run (or nudge) tries again.
                report.launch_errors.append(str(error))
                break
            except SandboxLaunchFailed as error:
                report.launch_errors.append(str(error))
                break
        oldest = min((sandbox.idle_since or sandbox.launched_at for sandbox in kept_idle), default=None)
        record_pool_size(
            idle=len(kept_idle),
            launching=len(kept_launching) + len(report.launched),
            oldest_idle_seconds=(now - oldest) / 1000 if oldest else 0.0,
        )
        if retired or report.launched or report.launch_errors:
            logger.info("pool reconciled", extra=report.summary())
        return report

    def _retirement_reason(self, sandbox: PoolSandbox, now: int) -> str | None:
        config = self._config
        if sandbox.task_definition_arn != config.sandbox_task_definition_arn:
            return "on an outdated task definition"
        if sandbox.pool_status is PoolState.LAUNCHING:
            if now - sandbox.launched_at > config.pool_boot_timeout_seconds * 1000:
                return "did not boot within PoolBootTimeoutSeconds"
            return None
        if now - (sandbox.heartbeat_at or sandbox.launched_at) > config.pool_heartbeat_stale_seconds * 1000:
            return "stopped polling for its assignment"
        if now - (sandbox.idle_since or sandbox.launched_at) > config.pool_max_idle_seconds * 1000:
            return "idle longer than PoolMaxIdleSeconds"
        return None

    def _retire(self, sandbox: PoolSandbox, reason: str, now: int) -> bool:
        """Only an unclaimed sandbox: a claim that won meanwhile keeps it."""
        if not self._store.end(sandbox.sandbox_id, PoolState.RETIRED, reason, now):
            return False
        if sandbox.task_arn:
            self._fleet.stop(sandbox.task_arn, f"pool: {reason}")
        return True

    def launch_one(self) -> str:
        sandbox_id = POOL_SANDBOX_PREFIX + secrets.token_hex(12)
        credential = f"{sandbox_id}.{secrets.token_urlsafe(32)}"
        now = now_epoch_ms()
        self._store.put_launching(
            PoolSandbox(
                sandbox_id=sandbox_id,
                pool_status=PoolState.LAUNCHING,
                launched_at=now,
                task_definition_arn=self._config.sandbox_task_definition_arn,
                credential_hash=credential_hash(credential),
            )
        )
        environment = {  # RunTask's overrides are readable: the credential goes sealed for the task role
            "SANDBOX_POOL_ID": sandbox_id,
            POOL_CIPHERTEXT_VARIABLE: self._token_sealer.seal_pool_credential(credential, sandbox_id=sandbox_id),
            "SANDBOX_API_URL": self._config.sandbox_api_url,
        }
        try:
            task_arn = self._fleet.launch_pool_sandbox(sandbox_id, environment)
        except SandboxLaunchFailed as error:
            self._store.end(sandbox_id, PoolState.DEAD, f"RunTask failed: {error}", now_epoch_ms())
            raise
        self._store.set_task(sandbox_id, task_arn)
        return sandbox_id

    # -- ECS: a pool task stopped --------------------------------------------------------------
    def task_stopped(self, sandbox_id: str, task_arn: str, stopped_reason: str) -> str | None:
        """An unclaimed sandbox that died is marked DEAD and replaced; for a claimed one, the
        conversation it serves (the sandbox watch then handles it as any sandbox's)."""
        sandbox = self._store.get(sandbox_id)
        if sandbox is None:
            return None
        if sandbox.pool_status is PoolState.CLAIMED:
            return sandbox.conversation_id
        if sandbox.pool_status.is_live and self._store.end(
            sandbox_id, PoolState.DEAD, f"task stopped: {stopped_reason}"[:500], now_epoch_ms()
        ):
            logger.warning("an idle pool sandbox died", extra={"pool_sandbox_id": sandbox_id, "task_arn": task_arn})
            self.nudge()
        return None


class PoolChannel:
    """What an idle sandbox may do with its pool credential: say it is idle, wait for its
    assignment. Nothing else (the conversation endpoints do not know pool credentials)."""

    def __init__(self, config: ServiceConfig, store: PoolStore) -> None:
        self._config = config
        self._store = store

    def authenticate(self, authorization: str | None) -> PoolSandbox:
        scheme, _, credential = (authorization or "").partition(" ")
        sandbox_id, _, secret = credential.partition(".")
        if (
            scheme.lower() != "bearer"
            or not secret
            or len(credential) > 300
            or not sandbox_id.startswith(POOL_SANDBOX_PREFIX)
            or not self._config.pool_table
        ):
            raise Unauthorized("Missing or invalid pool credential")
        sandbox = self._store.get(sandbox_id)
        if sandbox is None or not hmac.compare_digest(sandbox.credential_hash, credential_hash(credential)):
            raise Unauthorized("Missing or invalid pool credential")
        return sandbox

    def report_idle(self, sandbox: PoolSandbox) -> None:
        if not self._store.mark_idle(sandbox.sandbox_id, now_epoch_ms()):
            raise PoolSandboxGone()

    def wait_for_assignment(self, sandbox: PoolSandbox, wait_seconds: float) -> dict[str, str] | None:
        """The assignment as soon as a claim stores it (once), or None after `wait_seconds`."""
        wait = min(max(wait_seconds, 0.0), self._config.pool_assignment_wait_seconds)
        deadline = time.monotonic() + wait
        current: PoolSandbox | None = sandbox
        if sandbox.pool_status is PoolState.IDLE and not self._store.heartbeat(sandbox.sandbox_id, now_epoch_ms()):
            current = self._store.get(sandbox.sandbox_id)  # claimed or ended since we read it
        while True:
            if current is None or current.pool_status in (PoolState.RETIRED, PoolState.DEAD):
                raise PoolSandboxGone()
            if current.pool_status is PoolState.CLAIMED:
                assignment = self._store.take_assignment(current.sandbox_id, now_epoch_ms())
                if assignment is None:
                    raise PoolSandboxGone("This pool sandbox's assignment was already delivered")
                return assignment
            if current.pool_status is PoolState.LAUNCHING:
                raise InvalidRequest("Report idle (POST /v1/pool/idle) before waiting for an assignment")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._store.wait_for_change(sandbox.sandbox_id, min(self._config.pool_assignment_poll_seconds, remaining))
            current = self._store.get(sandbox.sandbox_id)
