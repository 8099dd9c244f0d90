"""In-memory implementations of the ports (layers/common/conversation_service/ports.py).

They behave as the DynamoDB/S3/Step Functions/ECS/KMS code in `dal/` does, not as canned
answers: every conditional write checks its condition under one lock (as DynamoDB's
transactions are atomic), the active counter moves in the same step as the status, ids collide,
limits hold, listings come newest first in pages, an execution name starts once, a sealed value
opens only for the owner (and conversation) it was sealed for. A test that passes against them
and fails against `dal/` (or the other way round) is a bug in one of the two: the emulated
suite (tests/emulated) runs the same rules against moto.

When `dal/` changes a method logic calls, change its fake here in the same commit.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conversation_service.dal.active_slots import PER_RUN_FIELDS
from conversation_service.dal.events import OutgoingEvent
from conversation_service.models.domain import (
    ACTIVE_STATUSES,
    Conversation,
    ConversationStatus,
    CreationSnapshot,
    RuntimeStatus,
    TimelineEntry,
    UserSecrets,
    UserSettings,
)
from conversation_service.models.errors import (
    ActiveLimitReached,
    ConversationChanged,
    ConversationIdTaken,
    ConversationNoLongerActive,
    PageTokenInvalid,
    SandboxLaunchFailed,
    SealedForAConversation,
    WorkflowNotWaiting,
    WorkflowStartRefused,
)
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DYNAMODB_ITEM_LIMIT_BYTES = 400 * 1024
"""What DynamoDB refuses to store (ValidationException): logic must move large parts to S3."""


class ItemTooLarge(ValueError):
    """DynamoDB's ValidationException for an item over 400 KB."""


def _jsonable(value: Any) -> Any:
    """A value as DynamoDB would give it back: JSON types, copied (no aliasing with the caller)."""
    return json.loads(json.dumps(value, default=str))


# -- sealing -----------------------------------------------------------------------------------
class LocalSecretBox:
    """`dal.secrets.SecretBox` with a local AES-GCM key instead of KMS: the same encryption
    context (owner, and conversation when named, marked `conv1:`), so a value sealed for one
    user or conversation does not open for another."""

    CONVERSATION_PREFIX = "conv1:"

    def __init__(self) -> None:
        self._key = AESGCM(AESGCM.generate_key(bit_length=256))
        self.sealed_count = 0

    @staticmethod
    def _aad(owner: str, conversation_id: str | None) -> bytes:
        return json.dumps({"owner": owner, "conversation_id": conversation_id}, sort_keys=True).encode()

    def seal(self, secrets: dict[str, object], *, owner: str, conversation_id: str | None = None) -> str:
        nonce = os.urandom(12)
        data = self._key.encrypt(nonce, json.dumps(secrets).encode(), self._aad(owner, conversation_id))
        self.sealed_count += 1
        mark = self.CONVERSATION_PREFIX if conversation_id is not None else ""
        return mark + base64.b64encode(nonce + data).decode()

    def open(self, sealed: str, *, owner: str, conversation_id: str | None = None) -> dict[str, object]:
        if sealed.startswith(self.CONVERSATION_PREFIX):
            if conversation_id is None:
                raise SealedForAConversation("this value is sealed for a conversation: name it")
            sealed = sealed[len(self.CONVERSATION_PREFIX) :]
        else:
            conversation_id = None
        blob = base64.b64decode(sealed)
        try:
            plaintext = self._key.decrypt(blob[:12], blob[12:], self._aad(owner, conversation_id))
        except InvalidTag as error:  # KMS: InvalidCiphertextException
            raise ValueError("sealed for another owner or conversation") from error
        opened: dict[str, object] = json.loads(plaintext)
        return opened


class LocalSandboxTokenSealer:
    """`dal.sandbox_tokens.SandboxTokenSealer`: a token sealed for one conversation's task."""

    def __init__(self) -> None:
        self._box = LocalSecretBox()

    def seal(self, token: str, *, conversation_id: str) -> str:
        return self._box.seal({"token": token}, owner="sandbox-token", conversation_id=conversation_id)

    def open(self, sealed: str, *, conversation_id: str) -> str:
        """What the sandbox's task role would decrypt (only with its own conversation's context)."""
        return str(self._box.open(sealed, owner="sandbox-token", conversation_id=conversation_id)["token"])


class LocalPageTokenSealer:
    """`dal.page_tokens.PageTokenSealer`: opaque positions bound to their owner; anything else
    (forged, altered, another user's) is PageTokenInvalid."""

    def __init__(self) -> None:
        self._box = LocalSecretBox()

    def seal(self, position: dict[str, Any], *, owner: str) -> str:
        return base64.urlsafe_b64encode(self._box.seal(position, owner=owner).encode()).decode().rstrip("=")

    def open(self, token: str, *, owner: str) -> dict[str, Any]:
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            return dict(self._box.open(sealed, owner=owner))
        except (ValueError, UnicodeDecodeError) as error:
            raise PageTokenInvalid("not a token of this owner") from error


# -- users -------------------------------------------------------------------------------------
class InMemoryUserStore:
    """The users table: settings with their secrets sealed per user, and the active counter
    (which only `InMemoryConversationStore` moves, in the same step as a status)."""

    def __init__(self, secret_box: LocalSecretBox | None = None) -> None:
        self.secret_box = secret_box or LocalSecretBox()
        self.lock = threading.RLock()
        self._settings: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, int] = {}

    def get_settings(self, user_id: str) -> UserSettings | None:
        with self.lock:
            stored = self._settings.get(user_id)
        return UserSettings.model_validate(copy.deepcopy(stored)) if stored is not None else None

    def save_settings(self, settings: UserSettings, secrets: UserSecrets) -> None:
        settings.llm_api_key_set = bool(secrets.llm_api_key)
        settings.provider_tokens_set = sorted(secrets.provider_tokens)
        settings.sealed_secrets = self.secret_box.seal(secrets.model_dump(), owner=settings.user_id)
        with self.lock:
            self._settings[settings.user_id] = _jsonable(settings.model_dump(exclude_none=True))

    def open_secrets(self, settings: UserSettings) -> UserSecrets:
        if not settings.sealed_secrets:
            return UserSecrets()
        return UserSecrets.model_validate(self.secret_box.open(settings.sealed_secrets, owner=settings.user_id))

    def seal_for(self, user_id: str, payload: dict[str, Any], *, conversation_id: str | None = None) -> str:
        return self.secret_box.seal(payload, owner=user_id, conversation_id=conversation_id)

    def open_for(self, user_id: str, sealed: str, *, conversation_id: str | None = None) -> dict[str, Any]:
        return dict(self.secret_box.open(sealed, owner=user_id, conversation_id=conversation_id))

    def active_count(self, user_id: str) -> int:
        with self.lock:
            return self.counters.get(user_id, 0)


# -- conversations -----------------------------------------------------------------------------
class InMemoryConversationStore:
    """The conversations table and its two indexes (ByUser, the sparse ActiveByUser), with the
    user's active counter in `users`: every method checks and writes under one lock, as one
    DynamoDB transaction does, and raises what `dal.conversations.ConversationStore` raises.

    `before_write` (if set) is called with the method's name before each write: a test makes it
    raise (a throttled transaction) or change the table (someone else got there first)."""

    def __init__(self, users: InMemoryUserStore) -> None:
        self._users = users
        self._lock = users.lock  # one lock for both tables: transactions span them
        self.items: dict[str, dict[str, Any]] = {}
        self.before_write: Callable[[str], None] | None = None
        self.writes: list[str] = []  # the name of each write that went through, in order

    # -- what tests look at
    def item(self, conversation_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self.items[conversation_id])

    def active_ids(self, user_id: str) -> list[str]:
        """ActiveByUser: the user's STARTING/RUNNING conversations, least recently active first."""
        with self._lock:
            return [item["conversation_id"] for item in self._active_of(user_id)]

    # -- reads
    def get(self, conversation_id: str, *, consistent: bool = False) -> Conversation | None:
        with self._lock:
            item = self.items.get(conversation_id)
            return _conversation(item) if item is not None else None

    def starting_not_updated_since(self, cutoff_iso: str, *, limit: int = 500) -> list[Conversation]:
        with self._lock:
            found = [
                _conversation(item)
                for item in self.items.values()
                if item["conversation_status"] == ConversationStatus.STARTING and item["updated_at"] < cutoff_iso
            ]
        return found[:limit]

    def least_recently_active(self, user_id: str) -> Conversation | None:
        with self._lock:
            active = self._active_of(user_id)
            return _conversation(active[0]) if active else None

    def creation_snapshot(self, user_id: str, conversation_id: str | None = None) -> CreationSnapshot:
        with self._lock:
            existing = self.items.get(conversation_id) if conversation_id is not None else None
            return CreationSnapshot(
                settings=self._users.get_settings(user_id),
                active_count=self._users.counters.get(user_id, 0),
                existing=_conversation(existing) if existing is not None else None,
            )

    def page_for_user(
        self,
        user_id: str,
        *,
        limit: int,
        start_after: dict[str, str] | None = None,
        repository: str | None = None,
        trigger: str | None = None,
        max_queries: int = 10,
    ) -> tuple[list[Conversation], dict[str, str] | None]:
        """As DynamoDB answers the ByUser query: newest first, each query reading up to its
        Limit items *before* the filter, at most `max_queries` queries per page."""
        with self._lock:
            ordered = sorted(
                (item for item in self.items.values() if item["user_id"] == user_id),
                key=lambda item: (item["created_at"], item["conversation_id"]),
                reverse=True,
            )
        position = 0
        if start_after is not None:
            after = (start_after["created_at"], start_after["conversation_id"])
            position = next(
                (index for index, item in enumerate(ordered) if (item["created_at"], item["conversation_id"]) < after),
                len(ordered),
            )
        filtered = repository is not None or trigger is not None
        found: list[dict[str, Any]] = []
        more = position < len(ordered)
        for _ in range(max_queries):
            wanted_more = limit + 1 - len(found)
            read = ordered[position : position + (max(wanted_more, 50) if filtered else wanted_more)]
            position += len(read)
            found += [
                item
                for item in read
                if (repository is None or item.get("repository") == repository)
                and (trigger is None or item.get("trigger") == trigger)
            ]
            more = position < len(ordered)
            if len(found) > limit or not more:
                break
        last: dict[str, Any] | None = ordered[position - 1] if more and position else None
        if len(found) > limit:
            found = found[:limit]
            last = found[-1]
        page_key = {name: str(last[name]) for name in ("conversation_id", "user_id", "created_at")} if last else None
        return [_conversation(item) for item in found], page_key

    # -- creation and start again
    def insert_within_limit(self, conversation: Conversation, limit: int) -> None:
        with self._lock:
            self._write("insert_within_limit")
            new = self._new_item(conversation)
            self._check_id_free(conversation.conversation_id)
            self._check_slot(conversation.user_id, limit)
            self.items[conversation.conversation_id] = new
            self._users.counters[conversation.user_id] = self._users.counters.get(conversation.user_id, 0) + 1

    def insert_replacing(self, conversation: Conversation, victim: Conversation, *, reason: str, at: str) -> None:
        with self._lock:
            self._write("insert_replacing")
            new = self._new_item(conversation)
            self._check_id_free(conversation.conversation_id)
            if not self._is_active_on(victim.conversation_id, victim.run):
                raise ConversationNoLongerActive()
            self.items[conversation.conversation_id] = new
            self._close(victim.conversation_id, ConversationStatus.STOPPED, at, {"status_reason": reason})

    def reactivate_within_limit(self, conversation: Conversation, limit: int, *, at: str, last_active_at: int) -> int:
        with self._lock:
            self._write("reactivate_within_limit")
            self._check_inactive_as_read(conversation)
            self._check_slot(conversation.user_id, limit)
            self._reactivate(conversation, at, last_active_at)
            self._users.counters[conversation.user_id] = self._users.counters.get(conversation.user_id, 0) + 1
            return conversation.run + 1

    def reactivate_replacing(
        self, conversation: Conversation, victim: Conversation, *, reason: str, at: str, last_active_at: int
    ) -> int:
        with self._lock:
            self._write("reactivate_replacing")
            self._check_inactive_as_read(conversation)
            if not self._is_active_on(victim.conversation_id, victim.run):
                raise ConversationNoLongerActive()
            self._reactivate(conversation, at, last_active_at)
            self._close(victim.conversation_id, ConversationStatus.STOPPED, at, {"status_reason": reason})
            return conversation.run + 1

    # -- status changes
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
    ) -> bool:
        if status in ACTIVE_STATUSES:
            raise ValueError(f"{status} is not a closing status")
        with self._lock:
            self._write("deactivate")
            if not self._is_active_on(conversation_id, run) or self._users.counters.get(user_id, 0) <= 0:
                return False
            fields = {
                "status_reason": reason,
                "error_code": error_code_value,
                "error_message": error_message,
                "error_details": error_details,
            }
            self._close(conversation_id, status, at, fields)
            self._users.counters[user_id] -= 1  # the slot, in the same transaction
            return True

    def set_runtime_phase(
        self, conversation_id: str, phase: RuntimeStatus, *, at: str, run: int | None = None, **fields: Any
    ) -> bool:
        return self._update_if_starting("set_runtime_phase", conversation_id, run, fields, phase=phase, at=at)

    def update_starting(self, conversation_id: str, *, run: int | None = None, **fields: Any) -> bool:
        return self._update_if_starting("update_starting", conversation_id, run, fields)

    def claim_context_delivery(
        self, conversation_id: str, sealed_session_api_key: str, *, run: int | None = None
    ) -> bool:
        with self._lock:
            self._write("claim_context_delivery")
            item = self._starting_on(conversation_id, run)
            if item is None or item.get("context_delivered"):
                return False
            item.update(context_delivered=True, sealed_session_api_key=sealed_session_api_key)
            return True

    def mark_running(
        self, conversation_id: str, *, at: str, last_active_at: int, run: int | None = None, **fields: Any
    ) -> bool:
        fields = {**fields, "conversation_status": ConversationStatus.RUNNING.value, "last_active_at": last_active_at}
        return self._update_if_starting("mark_running", conversation_id, run, fields, phase=RuntimeStatus.READY, at=at)

    def set_agent_status(self, conversation_id: str, run: int, status: str, *, at: str, answer_stays: bool) -> bool:
        with self._lock:
            self._write("set_agent_status")
            if not self._is_active_on(conversation_id, run):
                return False
            item = self.items[conversation_id]
            item.update(agent_status=status, agent_status_at=at)
            if not answer_stays:
                item.pop("confirmation_answered_at", None)
            return True

    def rename(self, conversation_id: str, user_id: str, title: str, *, at: str) -> bool:
        with self._lock:
            self._write("rename")
            item = self.items.get(conversation_id)
            if item is None or item["user_id"] != user_id:
                return False
            item.update(title=title, updated_at=at)
            return True

    def request_teardown(self, conversation: Conversation, *, at: str) -> bool:
        with self._lock:
            self._write("request_teardown")
            if not self._as_read(conversation):
                return False
            self.items[conversation.conversation_id]["teardown_requested_at"] = at
            return True

    def delete(self, conversation: Conversation) -> None:
        with self._lock:
            self._write("delete")
            if not self._as_read(conversation):
                raise ConversationChanged()
            if conversation.is_active:
                if self._users.counters.get(conversation.user_id, 0) <= 0:
                    raise ConversationNoLongerActive()
                self._users.counters[conversation.user_id] -= 1
            del self.items[conversation.conversation_id]

    # -- helpers (called with the lock held)
    def _write(self, name: str) -> None:
        if self.before_write is not None:
            self.before_write(name)
        self.writes.append(name)

    def _active_of(self, user_id: str) -> list[dict[str, Any]]:
        active = [
            item
            for item in self.items.values()
            if item["user_id"] == user_id and item["conversation_status"] in ACTIVE_STATUSES
        ]
        return sorted(active, key=lambda item: (item["last_active_at"], item["conversation_id"]))

    def _new_item(self, conversation: Conversation) -> dict[str, Any]:
        item = _jsonable(conversation.model_dump(mode="json", exclude_none=True))
        if len(json.dumps(item)) > DYNAMODB_ITEM_LIMIT_BYTES:
            raise ItemTooLarge("Item size has exceeded the maximum allowed size")
        return item

    def _check_id_free(self, conversation_id: str) -> None:
        if conversation_id in self.items:
            raise ConversationIdTaken(_conversation(self.items[conversation_id]))

    def _check_slot(self, user_id: str, limit: int) -> None:
        current = self._users.counters.get(user_id, 0)
        if current >= limit:
            raise ActiveLimitReached(current)

    def _is_active_on(self, conversation_id: str, run: int | None) -> bool:
        item = self.items.get(conversation_id)
        return (
            item is not None
            and item["conversation_status"] in ACTIVE_STATUSES
            and (run is None or item.get("run", 1) == run)
        )

    def _starting_on(self, conversation_id: str, run: int | None) -> dict[str, Any] | None:
        item = self.items.get(conversation_id)
        if item is None or item["conversation_status"] != ConversationStatus.STARTING:
            return None
        if run is not None and item.get("run", 1) != run:
            return None
        return item

    def _as_read(self, conversation: Conversation) -> bool:
        item = self.items.get(conversation.conversation_id)
        return (
            item is not None
            and item["conversation_status"] == conversation.conversation_status.value
            and item.get("run", 1) == conversation.run
            and item["user_id"] == conversation.user_id
        )

    def _check_inactive_as_read(self, conversation: Conversation) -> None:
        item = self.items.get(conversation.conversation_id)
        if (
            item is None
            or item["conversation_status"] not in (ConversationStatus.STOPPED, ConversationStatus.ERROR)
            or item["user_id"] != conversation.user_id
            or item.get("run", 1) != conversation.run
        ):
            raise ConversationChanged()

    def _close(self, conversation_id: str, status: ConversationStatus, at: str, fields: dict[str, Any]) -> None:
        """The status change only: the caller moves the counter (or not, when replacing)."""
        item = self.items[conversation_id]
        runtime_status = "STATUS$ERROR" if status == ConversationStatus.ERROR else "STATUS$STOPPED"
        item.update(conversation_status=status.value, runtime_status=runtime_status, updated_at=at)
        item.setdefault("timeline", []).append(TimelineEntry(phase=runtime_status, at=at).model_dump())
        item.update(_jsonable({name: value for name, value in fields.items() if value is not None}))

    def _reactivate(self, conversation: Conversation, at: str, last_active_at: int) -> None:
        item = self.items[conversation.conversation_id]
        for name in PER_RUN_FIELDS:
            item.pop(name, None)
        item.update(
            conversation_status=ConversationStatus.STARTING.value,
            runtime_status="STATUS$QUEUED",
            updated_at=at,
            last_active_at=last_active_at,
            timeline=[TimelineEntry(phase=RuntimeStatus.QUEUED, at=at).model_dump()],
            run=conversation.run + 1,
        )

    def _update_if_starting(
        self,
        name: str,
        conversation_id: str,
        run: int | None,
        fields: dict[str, Any],
        *,
        phase: str | None = None,
        at: str | None = None,
    ) -> bool:
        with self._lock:
            self._write(name)
            item = self._starting_on(conversation_id, run)
            if item is None:
                return False
            if phase is not None and at is not None:
                item.update(runtime_status=phase, updated_at=at)
                item.setdefault("timeline", []).append(TimelineEntry(phase=phase, at=at).model_dump())
            item.update(_jsonable({key: value for key, value in fields.items() if value is not None}))
            return True


def _conversation(item: dict[str, Any]) -> Conversation:
    return Conversation.model_validate(
        {key: copy.deepcopy(item[key]) for key in Conversation.model_fields if key in item}
    )


# -- S3 ----------------------------------------------------------------------------------------
class InMemoryContextStore:
    """The context bucket: JSON documents by key; a missing key is an error, as S3's NoSuchKey."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_json(self, key: str, payload: dict[str, Any]) -> str:
        self.objects[key] = json.dumps(payload).encode()
        return key

    def get_json(self, key: str) -> dict[str, Any]:
        if key not in self.objects:
            raise KeyError(f"NoSuchKey: {key}")
        loaded: dict[str, Any] = json.loads(self.objects[key])
        return loaded

    def purge_prefix(self, prefix: str) -> int:
        doomed = [key for key in self.objects if key.startswith(prefix)]
        for key in doomed:
            del self.objects[key]
        return len(doomed)

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))


# -- Step Functions ------------------------------------------------------------------------------
@dataclass
class Execution:
    name: str
    payload: dict[str, Any]
    status: str = "RUNNING"  # RUNNING, ABORTED
    cause: str | None = None


@dataclass
class TaskCallback:
    """What a waiting task token got: heartbeats, then success or failure (at most one)."""

    heartbeats: int = 0
    outcome: str | None = None  # "success" or "failure"
    output: dict[str, Any] | None = None
    error: str | None = None
    cause: dict[str, Any] | None = None


class InMemoryWorkflowEngine:
    """The creation state machine's executions by name (a name starts once, as Step Functions'
    ExecutionAlreadyExists), and its task tokens: a token is answered once; answering one that is
    answered, unknown or timed out is WorkflowNotWaiting."""

    ARN_PREFIX = "arn:aws:states:us-east-1:123456789012:execution:CreationWorkflow:"

    def __init__(self) -> None:
        self.executions: dict[str, Execution] = {}
        self.callbacks: dict[str, TaskCallback] = {}
        self.refuse_starts_with: type[Exception] | None = None  # WorkflowStartRetryable / WorkflowStartRefused

    def start(self, execution_name: str, payload: dict[str, Any]) -> str | None:
        if self.refuse_starts_with is not None:
            raise self.refuse_starts_with("refused by the test")
        if len(execution_name) > 80:
            raise WorkflowStartRefused("InvalidName")
        if len(json.dumps(payload)) > 256 * 1024:
            raise WorkflowStartRefused("InvalidExecutionInput")
        if execution_name in self.executions:
            return None
        self.executions[execution_name] = Execution(execution_name, _jsonable(payload))
        return self.ARN_PREFIX + execution_name

    def stop(self, execution_name: str, cause: str) -> bool:
        execution = self.executions.get(execution_name)
        if execution is None:
            return False
        execution.status, execution.cause = "ABORTED", cause[:1000]
        return True

    def wait_for(self, task_token: str | None = None) -> str:
        """A task token the state machine now waits on (what a `.waitForTaskToken` step hands out)."""
        token = task_token or uuid.uuid4().hex
        self.callbacks[token] = TaskCallback()
        return token

    def time_out(self, task_token: str) -> None:
        del self.callbacks[task_token]

    def _waiting(self, task_token: str) -> TaskCallback:
        callback = self.callbacks.get(task_token)
        if callback is None:
            raise WorkflowNotWaiting("TaskDoesNotExist")
        if callback.outcome is not None:
            raise WorkflowNotWaiting("TaskTimedOut")
        return callback

    def heartbeat(self, task_token: str) -> None:
        self._waiting(task_token).heartbeats += 1

    def succeed(self, task_token: str, output: dict[str, Any]) -> None:
        callback = self._waiting(task_token)
        callback.outcome, callback.output = "success", _jsonable(output)

    def fail(self, task_token: str, error: str, cause: dict[str, Any]) -> None:
        callback = self._waiting(task_token)
        callback.outcome, callback.error, callback.cause = "failure", error[:256], _jsonable(cause)


# -- ECS -----------------------------------------------------------------------------------------
@dataclass
class Task:
    arn: str
    started_by: str
    environment: dict[str, str]
    tags: dict[str, str]
    desired_status: str = "RUNNING"
    stopped_reason: str | None = None
    private_address: str | None = None
    timestamps: dict[str, str] = field(default_factory=dict)


class InMemorySandboxFleet:
    """ECS tasks: RunTask records the task (started by its conversation or pool sandbox id,
    environment and tags as given); `fail_launches` makes the next launches fail the way ECS
    does (SandboxLaunchThrottled for capacity, SandboxLaunchFailed otherwise)."""

    ARN_PREFIX = "arn:aws:ecs:us-east-1:123456789012:task/sandboxes/"

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.fail_launches: list[Exception] = []
        self._numbers = itertools.count(1)

    def launch(self, conversation_id: str, user_id: str, environment: dict[str, str]) -> str:
        return self._run(conversation_id, environment, {"conversation_id": conversation_id, "user_id": user_id})

    def launch_pool_sandbox(self, sandbox_id: str, environment: dict[str, str]) -> str:
        return self._run(sandbox_id, environment, {"pool_sandbox_id": sandbox_id})

    def _run(self, started_by: str, environment: dict[str, str], tags: dict[str, str]) -> str:
        if self.fail_launches:
            raise self.fail_launches.pop(0)
        if any(not isinstance(value, str) for value in environment.values()):
            raise SandboxLaunchFailed("ECS refused the task: InvalidParameterException")
        arn = f"{self.ARN_PREFIX}{next(self._numbers):032x}"
        self.tasks[arn] = Task(arn, started_by, dict(environment), tags)
        return arn

    def phase_timestamps(self, task_arn: str) -> dict[str, Any]:
        task = self.tasks.get(task_arn)
        return dict(task.timestamps) if task else {}

    def private_address(self, task_arn: str) -> str | None:
        task = self.tasks.get(task_arn)
        return task.private_address if task else None

    def running_tasks(self, conversation_id: str) -> list[str]:
        return [
            task.arn
            for task in self.tasks.values()
            if task.started_by == conversation_id and task.desired_status == "RUNNING"
        ]

    def stop(self, task_arn: str, reason: str) -> None:
        task = self.tasks.get(task_arn)
        if task is not None:  # ECS: stopping an unknown or stopped task is not an error here
            task.desired_status, task.stopped_reason = "STOPPED", reason[:255]


# -- SQS, EventBridge ------------------------------------------------------------------------------
class InMemoryDeadLetterQueue:
    """Messages as SQS would keep them: the JSON body and the non-empty string attributes (256 chars)."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict[str, Any], dict[str, str]]] = []

    def send(self, body: dict[str, Any], attributes: dict[str, str]) -> None:
        kept = {name: value[:256] for name, value in attributes.items() if value}
        self.messages.append((json.loads(json.dumps(body, default=str)), kept))


class InMemoryEventPublisher:
    """The event bus: published events in order; no bus name, nothing published (as dal's)."""

    def __init__(self, bus_name: str = "conversation-events") -> None:
        self._bus_name = bus_name
        self.published: list[OutgoingEvent] = []

    @property
    def enabled(self) -> bool:
        return bool(self._bus_name)

    def publish(self, events: list[OutgoingEvent]) -> None:
        if self._bus_name:
            self.published.extend(events)
