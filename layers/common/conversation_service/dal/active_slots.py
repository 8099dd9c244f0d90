"""The user's active slots: every write that makes a conversation active or closes it moves the
user's `active_count` (users table) in the same DynamoDB transaction, so the concurrency limit
holds under any interleaving (no read-then-write).

These are the primitives; which one to use when (a free slot, else replace the least recently
active, else refuse) is the slot policy, a business rule: `logic/slot_policy.py`.
"""

from __future__ import annotations

from typing import Any

from conversation_service.dal.aws import Guarded, to_attribute, to_item, transact
from conversation_service.dal.conversation_records import (
    ACTIVE_VALUES,
    IS_ACTIVE,
    ConversationRecords,
    conversation_from_item,
    conversation_key,
)
from conversation_service.dal.users import active_count_from_item, quota_key
from conversation_service.models.domain import (
    ACTIVE_STATUSES,
    Conversation,
    ConversationStatus,
    RuntimeStatus,
    TimelineEntry,
)
from conversation_service.models.errors import (
    ActiveLimitReached,
    ConversationChanged,
    ConversationIdTaken,
    ConversationNoLongerActive,
)

# What belongs to one run of the workflow, forgotten when the conversation starts again.
PER_RUN_FIELDS = (
    "task_arn",
    "start",
    "pool_sandbox_id",
    "task_timestamps",
    "launched_at",
    "start_hops",
    "task_token",
    "sandbox_token_hash",
    "context_delivered",
    "context_key",
    "sealed_session_api_key",
    "agent_server_url",
    "agent_conversation_id",
    "workspace_dir",
    "microagents",
    "sandbox_failure",
    "error_code",
    "error_message",
    "error_details",
    "status_reason",
    "execution_arn",
    "teardown_requested_at",
    "agent_status",
    "agent_status_at",
    "confirmation_answered_at",
)


def _id_taken(reason: dict[str, Any]) -> Exception:
    stored = reason.get("Item")
    return ConversationIdTaken(conversation_from_item(stored) if stored else None)


def _limit_reached(reason: dict[str, Any]) -> Exception:
    return ActiveLimitReached(active_count_from_item(reason.get("Item", {})))


def _no_longer_active(_: dict[str, Any]) -> Exception:
    return ConversationNoLongerActive()


def _changed(_: dict[str, Any]) -> Exception:
    return ConversationChanged()


class ActiveSlots(ConversationRecords):
    # -- taking a slot ----------------------------------------------------------------------
    def insert_within_limit(self, conversation: Conversation, limit: int) -> None:
        """Write a new STARTING conversation and take one of the user's `limit` active slots.
        Raises ConversationIdTaken, ActiveLimitReached, WriteContention."""
        transact([self._put_new(conversation), self._take_slot(conversation.user_id, limit)])

    def insert_replacing(self, conversation: Conversation, victim: Conversation, *, reason: str, at: str) -> None:
        """Write a new conversation and close `victim` in its place: the active count is unchanged.
        Raises ConversationIdTaken, ConversationNoLongerActive (the victim), WriteContention."""
        transact([self._put_new(conversation), self._close(victim, reason=reason, at=at)])

    def reactivate_within_limit(self, conversation: Conversation, limit: int, *, at: str, last_active_at: int) -> int:
        """Start a STOPPED/ERROR conversation again, as its next run, taking one of the user's
        `limit` slots. Returns the new run. Raises ConversationChanged, ActiveLimitReached."""
        transact([self._reactivate(conversation, at, last_active_at), self._take_slot(conversation.user_id, limit)])
        return conversation.run + 1

    def reactivate_replacing(
        self, conversation: Conversation, victim: Conversation, *, reason: str, at: str, last_active_at: int
    ) -> int:
        """Start a conversation again and close `victim` in its place: the active count is unchanged."""
        transact([self._reactivate(conversation, at, last_active_at), self._close(victim, reason=reason, at=at)])
        return conversation.run + 1

    # -- freeing a slot ---------------------------------------------------------------------
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
        """Move an active conversation to STOPPED/ERROR/ARCHIVED and free its slot.

        Returns False when it was not active (already closed), or is on another run than `run`:
        calling twice is harmless.
        """
        if status in ACTIVE_STATUSES:
            raise ValueError(f"{status} is not a closing status")
        recorded = {
            "status_reason": reason,
            "error_code": error_code_value,
            "error_message": error_message,
            "error_details": error_details,
        }
        update = self._closing_update(conversation_id, status, at, recorded, run=run)
        try:
            transact([Guarded(update, _no_longer_active), self._release_slot(user_id)])
        except ConversationNoLongerActive:
            return False
        return True

    # -- transaction items ------------------------------------------------------------------
    def _put_new(self, conversation: Conversation) -> Guarded:
        values = conversation.model_dump(mode="json", exclude_none=True)
        values["active_user_id"] = conversation.user_id
        put = {
            "Put": {
                "TableName": self.table_name,
                "Item": to_item(values),
                "ConditionExpression": "attribute_not_exists(conversation_id)",
                # A keyed create that finds its conversation answers with it, with no extra read.
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
        return Guarded(put, _id_taken)

    def _take_slot(self, user_id: str, limit: int) -> Guarded:
        """Take one of the user's `limit` active slots."""
        update = {
            "Update": {
                "TableName": self._users_table,
                "Key": quota_key(user_id),
                "UpdateExpression": "ADD active_count :one",
                "ConditionExpression": "attribute_not_exists(active_count) OR active_count < :limit",
                "ExpressionAttributeValues": {":one": {"N": "1"}, ":limit": {"N": str(limit)}},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
        return Guarded(update, _limit_reached)

    def _release_slot(self, user_id: str) -> Guarded:
        update = {
            "Update": {
                "TableName": self._users_table,
                "Key": quota_key(user_id),
                "UpdateExpression": "ADD active_count :minus_one",
                "ConditionExpression": "active_count > :zero",
                "ExpressionAttributeValues": {":minus_one": {"N": "-1"}, ":zero": {"N": "0"}},
            }
        }
        # A counter already at zero with an active conversation to close: the two disagree, so
        # the conversation was closed meanwhile (its closer released the slot).
        return Guarded(update, _no_longer_active)

    def _close(self, victim: Conversation, *, reason: str, at: str) -> Guarded:
        """Close `victim` (the slot passes to the conversation written with it)."""
        recorded = {"status_reason": reason}
        update = self._closing_update(victim.conversation_id, ConversationStatus.STOPPED, at, recorded, run=victim.run)
        return Guarded(update, _no_longer_active)

    def _closing_update(
        self,
        conversation_id: str,
        status: ConversationStatus,
        at: str,
        recorded: dict[str, Any],
        *,
        run: int | None = None,
    ) -> dict[str, Any]:
        """The update that closes an active conversation, with `recorded` (why, which error) set."""
        runtime_status = RuntimeStatus.ERROR if status == ConversationStatus.ERROR else RuntimeStatus.STOPPED
        values: dict[str, Any] = {
            ":status": to_attribute(status.value),
            ":runtime": to_attribute(runtime_status.value),
            ":at": to_attribute(at),
            ":entry": to_attribute([TimelineEntry(phase=runtime_status.value, at=at).model_dump()]),
            ":empty": {"L": []},
            **ACTIVE_VALUES,
        }
        sets = [
            "conversation_status = :status",
            "runtime_status = :runtime",
            "updated_at = :at",
            "timeline = list_append(if_not_exists(timeline, :empty), :entry)",
        ]
        for name, value in recorded.items():
            if value is not None:
                sets.append(f"{name} = :{name}")
                values[f":{name}"] = to_attribute(value)
        update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": conversation_key(conversation_id),
            "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE active_user_id",
            "ConditionExpression": IS_ACTIVE,
            "ExpressionAttributeValues": values,
        }
        if run is not None:
            update["ConditionExpression"] += " AND #run = :run"
            update["ExpressionAttributeNames"] = {"#run": "run"}
            values[":run"] = {"N": str(run)}
        return {"Update": update}

    def _reactivate(self, conversation: Conversation, at: str, last_active_at: int) -> Guarded:
        """The next run of a STOPPED/ERROR conversation, as the caller read it."""
        entry = TimelineEntry(phase=RuntimeStatus.QUEUED.value, at=at).model_dump()
        update = {
            "Update": {
                "TableName": self.table_name,
                "Key": conversation_key(conversation.conversation_id),
                "UpdateExpression": "SET conversation_status = :starting, runtime_status = :queued, updated_at = :at, "
                "last_active_at = :last_active, active_user_id = :user, timeline = :timeline, #run = :next_run "
                # Placeholders for every name: some are DynamoDB reserved words (`start`).
                "REMOVE " + ", ".join(f"#per_run{index}" for index in range(len(PER_RUN_FIELDS))),
                "ConditionExpression": "conversation_status IN (:stopped, :error) AND user_id = :user AND #run = :run",
                "ExpressionAttributeNames": {
                    "#run": "run",
                    **{f"#per_run{index}": name for index, name in enumerate(PER_RUN_FIELDS)},
                },
                "ExpressionAttributeValues": {
                    ":starting": {"S": ConversationStatus.STARTING.value},
                    ":queued": {"S": RuntimeStatus.QUEUED.value},
                    ":stopped": {"S": ConversationStatus.STOPPED.value},
                    ":error": {"S": ConversationStatus.ERROR.value},
                    ":at": {"S": at},
                    ":last_active": {"N": str(last_active_at)},
                    ":user": {"S": conversation.user_id},
                    ":timeline": to_attribute([entry]),
                    ":run": {"N": str(conversation.run)},
                    ":next_run": {"N": str(conversation.run + 1)},
                },
            }
        }
        return Guarded(update, _changed)
