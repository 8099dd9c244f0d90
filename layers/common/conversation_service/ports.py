"""The ports: what the business rules in `logic/` need from the outside world, as typing Protocols.

Each Protocol lists exactly the methods logic calls today and is named after the `dal/` class
that implements it with boto3; `tests/support/fakes.py` implements them in memory for the unit
tests (tests/unit, no AWS emulation). A logic constructor takes these types, never a `dal` class: change a method logic
calls and you change it here, in `dal/` and in the fakes, in one commit.

The records they pass (`Conversation`, `UserSettings`, `PoolSandbox`...) live in `models/`; the
few `dal` dataclasses named below are imported for type checking only, so importing the ports
costs no AWS SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from conversation_service.dal.channel import AppendResult, PreparedEvent
    from conversation_service.dal.events import OutgoingEvent
    from conversation_service.models.domain import (
        Conversation,
        ConversationStatus,
        CreationSnapshot,
        RuntimeStatus,
        UserSecrets,
        UserSettings,
    )
    from conversation_service.models.pool import PoolSandbox, PoolState


class ConversationStore(Protocol):
    """The conversations table and, in the same transactions, the user's active counter.

    Every write is conditional: it returns False (or raises the `models/errors.py` StoreOutcome
    named in its docstring) when the conversation is not as the caller expects, so two writers
    never both win."""

    # -- reads
    def get(self, conversation_id: str, *, consistent: bool = False) -> Conversation | None: ...

    def starting_not_updated_since(self, cutoff_iso: str, *, limit: int = 500) -> list[Conversation]: ...

    def least_recently_active(self, user_id: str) -> Conversation | None: ...

    def creation_snapshot(self, user_id: str, conversation_id: str | None = None) -> CreationSnapshot: ...

    def page_for_user(
        self,
        user_id: str,
        *,
        limit: int,
        start_after: dict[str, str] | None = None,
        repository: str | None = None,
        trigger: str | None = None,
        max_queries: int = 10,
    ) -> tuple[list[Conversation], dict[str, str] | None]: ...

    # -- creation and start again: take a free slot, or replace the least recently active
    def insert_within_limit(self, conversation: Conversation, limit: int) -> None:
        """ConversationIdTaken if the id exists, ActiveLimitReached if the user is at `limit`."""

    def insert_replacing(self, conversation: Conversation, victim: Conversation, *, reason: str, at: str) -> None:
        """ConversationNoLongerActive if `victim` closed meanwhile, ConversationIdTaken as above."""

    def reactivate_within_limit(self, conversation: Conversation, limit: int, *, at: str, last_active_at: int) -> int:
        """The new run; ConversationChanged if `conversation` is not as read, ActiveLimitReached."""

    def reactivate_replacing(
        self, conversation: Conversation, victim: Conversation, *, reason: str, at: str, last_active_at: int
    ) -> int: ...

    # -- status changes (False: not as expected, nothing written)
    def deactivate(
        self,
        conversation_id: str,
        user_id: str,
        status: ConversationStatus,
        *,
        at: str,
        reason: str | None = None,
        error_code_value: str | None = None,
        error_message: str | None = None,
        error_details: dict[str, Any] | None = None,
        run: int | None = None,
    ) -> bool: ...

    def set_runtime_phase(
        self, conversation_id: str, phase: RuntimeStatus, *, at: str, run: int | None = None, **fields: Any
    ) -> bool: ...

    def update_starting(self, conversation_id: str, *, run: int | None = None, **fields: Any) -> bool: ...

    def claim_context_delivery(
        self, conversation_id: str, sealed_session_api_key: str, *, run: int | None = None
    ) -> bool: ...

    def mark_running(
        self, conversation_id: str, *, at: str, last_active_at: int, run: int | None = None, **fields: Any
    ) -> bool: ...

    def set_agent_status(self, conversation_id: str, run: int, status: str, *, at: str, answer_stays: bool) -> bool: ...

    def rename(self, conversation_id: str, user_id: str, title: str, *, at: str) -> bool: ...

    def request_teardown(self, conversation: Conversation, *, at: str) -> bool: ...

    def delete(self, conversation: Conversation) -> None:
        """ConversationChanged if it is no longer as read (deleting an active one frees its slot)."""


class UserStore(Protocol):
    """The users table: settings (secrets sealed per user), the active counter's reading."""

    def get_settings(self, user_id: str) -> UserSettings | None: ...

    def save_settings(self, settings: UserSettings, secrets: UserSecrets) -> None: ...

    def open_secrets(self, settings: UserSettings) -> UserSecrets: ...

    def seal_for(self, user_id: str, payload: dict[str, Any], *, conversation_id: str | None = None) -> str: ...

    def open_for(self, user_id: str, sealed: str, *, conversation_id: str | None = None) -> dict[str, Any]:
        """What `seal_for` sealed for the same user (and conversation); raises for anything else."""

    def active_count(self, user_id: str) -> int: ...


class ContextStore(Protocol):
    """JSON documents by key (the S3 context bucket): sandbox contexts, large requests."""

    def put_json(self, key: str, payload: dict[str, Any]) -> str: ...

    def get_json(self, key: str) -> dict[str, Any]: ...

    def purge_prefix(self, prefix: str) -> int: ...


class ChannelStore(Protocol):
    """A conversation's event log (ordered by seq), inbox and workspace report."""

    def append_events(
        self, conversation_id: str, events: list[PreparedEvent], *, max_events: int, max_bytes: int
    ) -> AppendResult: ...

    def events_after(
        self, conversation_id: str, after_seq: int, limit: int, *, max_bytes: int = 4 * 1024 * 1024
    ) -> list[dict[str, Any]]: ...

    def enqueue(
        self,
        conversation_id: str,
        user_id: str,
        item: dict[str, Any],
        *,
        last_active_at: int,
        answers_confirmation_at: str | None = None,
    ) -> int: ...

    def pending_inbox(self, conversation_id: str, limit: int = 20) -> list[dict[str, Any]]: ...

    def acknowledge(self, conversation_id: str, seq: int) -> None: ...

    def put_workspace(self, conversation_id: str, snapshot: dict[str, Any]) -> None: ...

    def get_workspace(self, conversation_id: str) -> dict[str, Any] | None: ...

    def purge(self, conversation_id: str) -> int: ...


class WorkflowEngine(Protocol):
    """The creation state machine: one execution per conversation run, callbacks by task token."""

    def start(self, execution_name: str, payload: dict[str, Any]) -> str | None:
        """The execution's ARN, None if one with that name exists; WorkflowStartRetryable/Refused."""

    def stop(self, execution_name: str, cause: str) -> bool: ...

    def heartbeat(self, task_token: str) -> None: ...

    def succeed(self, task_token: str, output: dict[str, Any]) -> None: ...

    def fail(self, task_token: str, error: str, cause: dict[str, Any]) -> None:
        """WorkflowNotWaiting when the token is no longer waited on."""


class SandboxFleet(Protocol):
    """The sandboxes (ECS tasks): launch, find, stop."""

    def launch(self, conversation_id: str, user_id: str, environment: dict[str, str]) -> str:
        """The task ARN; SandboxLaunchThrottled (retry) or SandboxLaunchFailed (give up)."""

    def launch_pool_sandbox(self, sandbox_id: str, environment: dict[str, str]) -> str: ...

    def phase_timestamps(self, task_arn: str) -> dict[str, Any]: ...

    def private_address(self, task_arn: str) -> str | None: ...

    def running_tasks(self, conversation_id: str) -> list[str]: ...

    def stop(self, task_arn: str, reason: str) -> None: ...


class PoolStore(Protocol):
    """The warm pool's table: one record per pool sandbox, every move conditional on its state."""

    def get(self, sandbox_id: str, *, consistent: bool = True) -> PoolSandbox | None: ...

    def live(self, state: PoolState, *, limit: int = 1000) -> list[PoolSandbox]: ...

    def wait_for_change(self, sandbox_id: str, seconds: float) -> None: ...

    def put_launching(self, sandbox: PoolSandbox) -> None: ...

    def set_task(self, sandbox_id: str, task_arn: str) -> bool: ...

    def mark_idle(self, sandbox_id: str, now_ms: int) -> bool: ...

    def heartbeat(self, sandbox_id: str, now_ms: int) -> bool: ...

    def claim(
        self,
        sandbox_id: str,
        *,
        conversation_id: str,
        assignment: dict[str, str],
        now_ms: int,
        heartbeat_after_ms: int,
        task_definition_arn: str,
    ) -> PoolSandbox | None: ...

    def take_assignment(self, sandbox_id: str, now_ms: int) -> dict[str, str] | None: ...

    def end(self, sandbox_id: str, state: PoolState, reason: str, now_ms: int) -> bool: ...


class ReconcilerNudge(Protocol):
    """Asks the pool reconciler to run now (fire and forget)."""

    def nudge(self) -> None: ...


class DeadLetterQueue(Protocol):
    """Where refused intake events go, with why."""

    def send(self, body: dict[str, Any], attributes: dict[str, str]) -> None: ...


class EventPublisher(Protocol):
    """The event bus conversation events are published on."""

    @property
    def enabled(self) -> bool: ...

    def publish(self, events: list[OutgoingEvent]) -> None: ...


class PageTokenSealer(Protocol):
    """Opaque, tamper-proof listing positions bound to their owner."""

    def seal(self, position: dict[str, Any], *, owner: str) -> str: ...

    def open(self, token: str, *, owner: str) -> dict[str, Any]:
        """PageTokenInvalid when forged, altered or another user's."""


class SandboxTokenSealer(Protocol):
    """Seals a sandbox's token, or a pool sandbox's credential, for its task (only the task's
    role can open it)."""

    def seal(self, token: str, *, conversation_id: str) -> str: ...

    def seal_pool_credential(self, credential: str, *, sandbox_id: str) -> str: ...


class SecretBox(Protocol):
    """Seals secrets for an owner (and conversation)."""

    def seal(self, secrets: dict[str, object], *, owner: str, conversation_id: str | None = None) -> str: ...
