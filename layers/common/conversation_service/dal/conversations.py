"""Conversations table. Every change of `conversation_status` goes through here, and the
user's active counter moves in the same DynamoDB transaction, so the concurrency limit holds
under any interleaving (no read-then-write).

Keys: `conversation_id`. Indexes: `ByUser` (user_id, created_at) for listings and the sparse
`ActiveByUser` (active_user_id, last_active_at): only STARTING/RUNNING items carry
`active_user_id`, so it lists exactly the user's active conversations, least recently active first.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from conversation_service.dal.aws import THROTTLING_CODES, client, error_code, from_item, to_attribute, to_item
from conversation_service.dal.users import quota_key
from conversation_service.models.domain import ACTIVE_STATUSES, Conversation, ConversationStatus, TimelineEntry


class ConversationIdTaken(Exception):
    """The generated id already exists (astronomically rare; the caller draws another)."""


class ActiveLimitReached(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(f"{current} active conversations")
        self.current = current


class ConversationNoLongerActive(Exception):
    """The conversation chosen to close was closed meanwhile by someone else."""


class WriteContention(Exception):
    """DynamoDB asked us to retry (throttling or a conflicting transaction)."""


_ACTIVE_VALUES = {":starting": {"S": "STARTING"}, ":running": {"S": "RUNNING"}}
_IS_ACTIVE = "conversation_status IN (:starting, :running)"


class ConversationStore:
    def __init__(self, table_name: str, users_table_name: str) -> None:
        self.table_name = table_name
        self._users_table = users_table_name

    # -- reads ---------------------------------------------------------------------------
    def get(self, conversation_id: str, *, consistent: bool = False) -> Conversation | None:
        response = client("dynamodb").get_item(
            TableName=self.table_name, Key={"conversation_id": {"S": conversation_id}}, ConsistentRead=consistent
        )
        return self._conversation(response["Item"]) if "Item" in response else None

    def least_recently_active(self, user_id: str) -> Conversation | None:
        response = client("dynamodb").query(
            TableName=self.table_name,
            IndexName="ActiveByUser",
            KeyConditionExpression="active_user_id = :user",
            ExpressionAttributeValues={":user": {"S": user_id}},
            ScanIndexForward=True,
            Limit=1,
        )
        items = response.get("Items", [])
        return self._conversation(items[0]) if items else None

    # -- creation --------------------------------------------------------------------------
    def insert_within_limit(self, conversation: Conversation, limit: int) -> None:
        """Write a new STARTING conversation and take one of the user's `limit` active slots."""
        self._transact(
            [
                self._put_new(conversation),
                {
                    "Update": {
                        "TableName": self._users_table,
                        "Key": quota_key(conversation.user_id),
                        "UpdateExpression": "ADD active_count :one",
                        "ConditionExpression": "attribute_not_exists(active_count) OR active_count < :limit",
                        "ExpressionAttributeValues": {":one": {"N": "1"}, ":limit": {"N": str(limit)}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
        )

    def insert_replacing(self, conversation: Conversation, victim: Conversation, *, reason: str, at: str) -> None:
        """Write a new conversation and close `victim` in its place: the active count is unchanged."""
        close = self._deactivate_update(victim.conversation_id, ConversationStatus.STOPPED, at, reason=reason)
        self._transact([self._put_new(conversation), close])

    # -- status changes ------------------------------------------------------------------------
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
    ) -> bool:
        """Move an active conversation to STOPPED/ERROR/ARCHIVED and free its slot.

        Returns False when it was not active (already closed): calling twice is harmless.
        """
        if status in ACTIVE_STATUSES:
            raise ValueError(f"{status} is not a closing status")
        update = self._deactivate_update(
            conversation_id,
            status,
            at,
            reason=reason,
            error_code_value=error_code_value,
            error_message=error_message,
            error_details=error_details,
        )
        try:
            self._transact([update, self._release_slot(user_id)])
        except ConversationNoLongerActive:
            return False
        return True

    def _deactivate_update(
        self,
        conversation_id: str,
        status: ConversationStatus,
        at: str,
        *,
        reason: str | None = None,
        error_code_value: str | None = None,
        error_message: str | None = None,
        error_details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        runtime_status = "STATUS$ERROR" if status == ConversationStatus.ERROR else "STATUS$STOPPED"
        values: dict[str, Any] = {
            ":status": to_attribute(status.value),
            ":runtime": to_attribute(runtime_status),
            ":at": to_attribute(at),
            ":entry": to_attribute([TimelineEntry(phase=runtime_status, at=at).model_dump()]),
            **_ACTIVE_VALUES,
        }
        sets = [
            "conversation_status = :status",
            "runtime_status = :runtime",
            "updated_at = :at",
            "timeline = list_append(if_not_exists(timeline, :empty), :entry)",
        ]
        values[":empty"] = {"L": []}
        for name, value in (
            ("status_reason", reason),
            ("error_code", error_code_value),
            ("error_message", error_message),
            ("error_details", error_details),
        ):
            if value is not None:
                sets.append(f"{name} = :{name}")
                values[f":{name}"] = to_attribute(value)
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": {"conversation_id": {"S": conversation_id}},
                "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE active_user_id",
                "ConditionExpression": _IS_ACTIVE,
                "ExpressionAttributeValues": values,
            }
        }

    def _release_slot(self, user_id: str) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._users_table,
                "Key": quota_key(user_id),
                "UpdateExpression": "ADD active_count :minus_one",
                "ConditionExpression": "active_count > :zero",
                "ExpressionAttributeValues": {":minus_one": {"N": "-1"}, ":zero": {"N": "0"}},
            }
        }

    def set_runtime_phase(self, conversation_id: str, phase: str, *, at: str, **fields: Any) -> bool:
        """Record a workflow phase on a STARTING conversation (timeline entry + runtime status)."""
        return self._update_if(
            conversation_id,
            phase,
            at,
            fields,
            condition="conversation_status = :starting",
            condition_values={":starting": {"S": "STARTING"}},
        )

    def update_starting(self, conversation_id: str, **fields: Any) -> bool:
        """Set fields on a conversation that is still STARTING (False if it is not)."""
        return self._update_if(
            conversation_id,
            None,
            None,
            fields,
            condition="conversation_status = :starting",
            condition_values={":starting": {"S": "STARTING"}},
        )

    def claim_context_delivery(self, conversation_id: str, sealed_session_api_key: str) -> bool:
        """The sandbox gets its context (with secrets) once: the first claim wins."""
        return self._update_if(
            conversation_id,
            None,
            None,
            {"context_delivered": True, "sealed_session_api_key": sealed_session_api_key},
            condition="conversation_status = :starting AND (attribute_not_exists(context_delivered) "
            "OR context_delivered = :false)",
            condition_values={":starting": {"S": "STARTING"}, ":false": {"BOOL": False}},
        )

    def mark_running(self, conversation_id: str, *, at: str, last_active_at: int, **fields: Any) -> bool:
        fields = {**fields, "conversation_status": ConversationStatus.RUNNING.value, "last_active_at": last_active_at}
        return self._update_if(
            conversation_id,
            "STATUS$READY",
            at,
            fields,
            condition="conversation_status = :starting",
            condition_values={":starting": {"S": "STARTING"}},
        )

    def _update_if(
        self,
        conversation_id: str,
        phase: str | None,
        at: str | None,
        fields: dict[str, Any],
        *,
        condition: str,
        condition_values: dict[str, Any],
    ) -> bool:
        values: dict[str, Any] = dict(condition_values)
        names: dict[str, str] = {}
        sets: list[str] = []
        if phase is not None and at is not None:
            values.update(
                {
                    ":phase": to_attribute(phase),
                    ":at": to_attribute(at),
                    ":entry": to_attribute([TimelineEntry(phase=phase, at=at).model_dump()]),
                    ":empty": {"L": []},
                }
            )
            sets += [
                "runtime_status = :phase",
                "updated_at = :at",
                "timeline = list_append(if_not_exists(timeline, :empty), :entry)",
            ]
        for index, (name, value) in enumerate(fields.items()):
            if value is None:
                continue
            names[f"#f{index}"] = name
            values[f":f{index}"] = to_attribute(value)
            sets.append(f"#f{index} = :f{index}")
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"conversation_id": {"S": conversation_id}},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            client("dynamodb").update_item(**request)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # -- helpers ---------------------------------------------------------------------------
    def _put_new(self, conversation: Conversation) -> dict[str, Any]:
        values = conversation.model_dump(mode="json", exclude_none=True)
        values["active_user_id"] = conversation.user_id
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": to_item(values),
                "ConditionExpression": "attribute_not_exists(conversation_id)",
            }
        }

    def _transact(self, items: list[dict[str, Any]]) -> None:
        try:
            client("dynamodb").transact_write_items(TransactItems=items)
        except ClientError as error:
            code = error_code(error)
            if code == "TransactionCanceledException":
                self._raise_cancellation(error, items)
            if code in THROTTLING_CODES:
                raise WriteContention(code) from error
            raise

    def _raise_cancellation(self, error: ClientError, items: list[dict[str, Any]]) -> None:
        reasons = error.response.get("CancellationReasons", [])
        for item, reason in zip(items, reasons, strict=False):
            if reason.get("Code") != "ConditionalCheckFailed":
                continue
            operation = next(iter(item))
            request = item[operation]
            if operation == "Put":
                raise ConversationIdTaken() from error
            if request["TableName"] == self._users_table and "ADD active_count :one" in request["UpdateExpression"]:
                current = int(from_item(reason.get("Item", {})).get("active_count", 0))
                raise ActiveLimitReached(current) from error
            raise ConversationNoLongerActive() from error
        raise WriteContention("TransactionCanceledException") from error

    @staticmethod
    def _conversation(item: dict[str, Any]) -> Conversation:
        values = from_item(item)
        return Conversation.model_validate({key: values[key] for key in Conversation.model_fields if key in values})
