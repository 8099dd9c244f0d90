"""Conversations table. Every change of `conversation_status` goes through here, and the
user's active counter moves in the same DynamoDB transaction, so the concurrency limit holds
under any interleaving (no read-then-write).

Keys: `conversation_id`. Indexes: `ByUser` (user_id, created_at) for listings and the sparse
`ActiveByUser` (active_user_id, last_active_at): only STARTING/RUNNING items carry
`active_user_id`, so it lists exactly the user's active conversations, least recently active first.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from conversation_service.dal.aws import THROTTLING_CODES, client, error_code, from_item, to_attribute, to_item
from conversation_service.dal.users import active_count_from_item, quota_key, settings_from_item, settings_key
from conversation_service.models.domain import (
    ACTIVE_STATUSES,
    Conversation,
    ConversationStatus,
    TimelineEntry,
    UserSettings,
)


class ConversationIdTaken(Exception):
    """The id already exists: a drawn id collided (astronomically rare; the caller draws another),
    or a keyed create finds the conversation its first attempt wrote (`existing`, as stored)."""

    def __init__(self, existing: Conversation | None = None) -> None:
        super().__init__("conversation id taken")
        self.existing = existing


class ActiveLimitReached(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(f"{current} active conversations")
        self.current = current


class ConversationNoLongerActive(Exception):
    """The conversation chosen to close was closed meanwhile by someone else."""


class WriteContention(Exception):
    """DynamoDB asked us to retry (throttling, a conflicting transaction, unprocessed keys)."""


@dataclass(frozen=True)
class CreationSnapshot:
    """What a create needs to know before it writes, read in one BatchGetItem."""

    settings: UserSettings | None
    active_count: int
    existing: Conversation | None  # the conversation already stored under a keyed create's id


SNAPSHOT_READ_ATTEMPTS = 4


class ConversationChanged(Exception):
    """The conversation is no longer as the caller read it (status, run, or gone): read it again."""


_ACTIVE_VALUES = {":starting": {"S": "STARTING"}, ":running": {"S": "RUNNING"}}
_IS_ACTIVE = "conversation_status IN (:starting, :running)"
# The ByUser index's key plus the table's: where a listing continues.
_PAGE_KEY = ("conversation_id", "user_id", "created_at")
# What belongs to one run of the workflow, forgotten when the conversation starts again.
_PER_RUN_FIELDS = (
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


def _as_read(conversation: Conversation) -> dict[str, Any]:
    """Condition: the conversation is still the user's, with the status and run the caller read."""
    return {
        "ConditionExpression": "conversation_status = :read_status AND #run = :read_run AND user_id = :read_user",
        "ExpressionAttributeNames": {"#run": "run"},
        "ExpressionAttributeValues": {
            ":read_status": {"S": conversation.conversation_status.value},
            ":read_run": {"N": str(conversation.run)},
            ":read_user": {"S": conversation.user_id},
        },
    }


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

    def starting_not_updated_since(self, cutoff_iso: str, *, limit: int = 500) -> list[Conversation]:
        """STARTING conversations untouched since `cutoff_iso` (a paginated scan: the sweeper's
        safety net runs every few minutes and reads only the status and dates it filters on)."""
        found: list[Conversation] = []
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": "conversation_status = :starting AND updated_at < :cutoff",
            "ExpressionAttributeValues": {":starting": {"S": "STARTING"}, ":cutoff": {"S": cutoff_iso}},
        }
        while len(found) < limit:
            response = client("dynamodb").scan(**request)
            found += [self._conversation(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found[:limit]

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
    def creation_snapshot(self, user_id: str, conversation_id: str | None = None) -> CreationSnapshot:
        """The user's settings and active count and, for a keyed create, the conversation under
        its id: one strongly consistent BatchGetItem across both tables."""
        user_keys = [settings_key(user_id), quota_key(user_id)]
        request: dict[str, Any] = {self._users_table: {"Keys": user_keys, "ConsistentRead": True}}
        if conversation_id is not None:
            keys = [{"conversation_id": {"S": conversation_id}}]
            request[self.table_name] = {"Keys": keys, "ConsistentRead": True}
        found: dict[str, list[dict[str, Any]]] = {}
        for attempt in range(SNAPSHOT_READ_ATTEMPTS):
            response = client("dynamodb").batch_get_item(RequestItems=request)
            for table, items in response.get("Responses", {}).items():
                found.setdefault(table, []).extend(items)
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(0.02 * 2**attempt * random.random())
        else:
            raise WriteContention("UnprocessedKeys")
        by_sort_key = {item["sk"]["S"]: item for item in found.get(self._users_table, [])}
        settings = by_sort_key.get(settings_key(user_id)["sk"]["S"])
        conversations = found.get(self.table_name, [])
        return CreationSnapshot(
            settings=settings_from_item(settings) if settings else None,
            active_count=active_count_from_item(by_sort_key.get(quota_key(user_id)["sk"]["S"], {})),
            existing=self._conversation(conversations[0]) if conversations else None,
        )

    def insert_within_limit(self, conversation: Conversation, limit: int) -> None:
        """Write a new STARTING conversation and take one of the user's `limit` active slots."""
        self._transact([self._put_new(conversation), self._take_slot(conversation.user_id, limit)], slot_index=1)

    def insert_replacing(self, conversation: Conversation, victim: Conversation, *, reason: str, at: str) -> None:
        """Write a new conversation and close `victim` in its place: the active count is unchanged."""
        close = self._deactivate_update(
            victim.conversation_id, ConversationStatus.STOPPED, at, reason=reason, run=victim.run
        )
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
        run: int | None = None,
    ) -> bool:
        """Move an active conversation to STOPPED/ERROR/ARCHIVED and free its slot.

        Returns False when it was not active (already closed), or is on another run than `run`:
        calling twice is harmless.
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
            run=run,
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
        run: int | None = None,
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
        update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"conversation_id": {"S": conversation_id}},
            "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE active_user_id",
            "ConditionExpression": _IS_ACTIVE,
            "ExpressionAttributeValues": values,
        }
        if run is not None:
            update["ConditionExpression"] += " AND #run = :run"
            update["ExpressionAttributeNames"] = {"#run": "run"}
            values[":run"] = {"N": str(run)}
        return {"Update": update}

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

    def set_runtime_phase(
        self, conversation_id: str, phase: str, *, at: str, run: int | None = None, **fields: Any
    ) -> bool:
        """Record a workflow phase on a STARTING conversation (timeline entry + runtime status)."""
        return self._update_if_starting(conversation_id, phase, at, fields, run)

    def update_starting(self, conversation_id: str, *, run: int | None = None, **fields: Any) -> bool:
        """Set fields on a conversation that is still STARTING (on run `run`; False if it is not)."""
        return self._update_if_starting(conversation_id, None, None, fields, run)

    def claim_context_delivery(
        self, conversation_id: str, sealed_session_api_key: str, *, run: int | None = None
    ) -> bool:
        """The sandbox gets its context (with secrets) once: the first claim wins."""
        return self._update_if(
            conversation_id,
            None,
            None,
            {"context_delivered": True, "sealed_session_api_key": sealed_session_api_key},
            condition="conversation_status = :starting AND (attribute_not_exists(context_delivered) "
            "OR context_delivered = :false)",
            condition_values={":starting": {"S": "STARTING"}, ":false": {"BOOL": False}},
            run=run,
        )

    def mark_running(
        self, conversation_id: str, *, at: str, last_active_at: int, run: int | None = None, **fields: Any
    ) -> bool:
        fields = {**fields, "conversation_status": ConversationStatus.RUNNING.value, "last_active_at": last_active_at}
        return self._update_if_starting(conversation_id, "STATUS$READY", at, fields, run)

    def _update_if_starting(
        self, conversation_id: str, phase: str | None, at: str | None, fields: dict[str, Any], run: int | None
    ) -> bool:
        """Apply the update only while the conversation is still STARTING (on run `run`)."""
        return self._update_if(
            conversation_id,
            phase,
            at,
            fields,
            condition="conversation_status = :starting",
            condition_values={":starting": {"S": "STARTING"}},
            run=run,
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
        run: int | None = None,
    ) -> bool:
        values: dict[str, Any] = dict(condition_values)
        names: dict[str, str] = {}
        sets: list[str] = []
        if run is not None:  # a step of an older run must not touch the current one
            condition = f"{condition} AND #run = :run"
            names["#run"] = "run"
            values[":run"] = {"N": str(run)}
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
        return self._update_on_condition(request)

    @staticmethod
    def _update_on_condition(request: dict[str, Any]) -> bool:
        """UpdateItem; False when its condition did not hold."""
        try:
            client("dynamodb").update_item(**request)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def set_agent_status(self, conversation_id: str, run: int, status: str, *, at: str, answer_stays: bool) -> bool:
        """Record the agent's execution status on an active conversation of run `run` (False when
        it is not). A recorded confirmation answer is forgotten unless `answer_stays`."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"conversation_id": {"S": conversation_id}},
            "UpdateExpression": "SET agent_status = :status, agent_status_at = :at"
            + ("" if answer_stays else " REMOVE confirmation_answered_at"),
            "ConditionExpression": f"{_IS_ACTIVE} AND #run = :run",
            "ExpressionAttributeNames": {"#run": "run"},
            "ExpressionAttributeValues": {
                ":status": {"S": status},
                ":at": {"S": at},
                ":run": {"N": str(run)},
                **_ACTIVE_VALUES,
            },
        }
        return self._update_on_condition(request)

    # -- lifecycle: listing, renaming, starting again, deleting ---------------------------------
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
        """The user's conversations, newest first (ByUser index), at most `limit`, and the position
        to continue from (None at the end). Filters are applied by DynamoDB; a page is filled by up
        to `max_queries` queries, so a sparse filter may answer fewer than `limit` and a position."""
        values: dict[str, Any] = {":user": {"S": user_id}}
        names: dict[str, str] = {}
        filters: list[str] = []
        for attribute, wanted in (("repository", repository), ("trigger", trigger)):
            if wanted is not None:
                names[f"#{attribute}"] = attribute
                values[f":{attribute}"] = {"S": wanted}
                filters.append(f"#{attribute} = :{attribute}")
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": "ByUser",
            "KeyConditionExpression": "user_id = :user",
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
            request["ExpressionAttributeNames"] = names
        found: list[dict[str, Any]] = []
        last_key = {name: {"S": value} for name, value in start_after.items()} if start_after else None
        for _ in range(max_queries):
            wanted_more = limit + 1 - len(found)  # one more than asked: is there a next page?
            query = {**request, "Limit": max(wanted_more, 50) if filters else wanted_more}
            if last_key:
                query["ExclusiveStartKey"] = last_key
            response = client("dynamodb").query(**query)
            found.extend(response.get("Items", []))
            last_key = response.get("LastEvaluatedKey")
            if len(found) > limit or not last_key:
                break
        if len(found) > limit:
            found = found[:limit]
            last_key = {name: found[-1][name] for name in _PAGE_KEY}
        position = {name: str(last_key[name]["S"]) for name in _PAGE_KEY} if last_key else None
        return [self._conversation(item) for item in found], position

    def rename(self, conversation_id: str, user_id: str, title: str, *, at: str) -> bool:
        """Set the title of the user's conversation (False if it is not theirs or is gone)."""
        try:
            client("dynamodb").update_item(
                TableName=self.table_name,
                Key={"conversation_id": {"S": conversation_id}},
                UpdateExpression="SET #title = :title, updated_at = :at",
                ConditionExpression="user_id = :user",
                ExpressionAttributeNames={"#title": "title"},
                ExpressionAttributeValues={":title": {"S": title}, ":at": {"S": at}, ":user": {"S": user_id}},
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def reactivate_within_limit(self, conversation: Conversation, limit: int, *, at: str, last_active_at: int) -> int:
        """Start a STOPPED/ERROR conversation again, as its next run, taking one of the user's
        `limit` slots. Returns the new run. Raises ConversationChanged, ActiveLimitReached."""
        take_slot = self._take_slot(conversation.user_id, limit)
        self._transact_as_read([self._reactivate_update(conversation, at, last_active_at), take_slot], slot_index=1)
        return conversation.run + 1

    def reactivate_replacing(
        self, conversation: Conversation, victim: Conversation, *, reason: str, at: str, last_active_at: int
    ) -> int:
        """Start a conversation again and close `victim` in its place: the active count is unchanged."""
        close = self._deactivate_update(
            victim.conversation_id, ConversationStatus.STOPPED, at, reason=reason, run=victim.run
        )
        self._transact_as_read([self._reactivate_update(conversation, at, last_active_at), close])
        return conversation.run + 1

    def delete(self, conversation: Conversation) -> None:
        """Remove the conversation as it was read; an active one frees its slot in the same
        transaction. Raises ConversationChanged when it changed or went meanwhile."""
        delete: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"conversation_id": {"S": conversation.conversation_id}},
            **_as_read(conversation),
        }
        if conversation.is_active:
            self._transact_as_read([{"Delete": delete}, self._release_slot(conversation.user_id)])
            return
        try:
            client("dynamodb").delete_item(**delete)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise ConversationChanged() from error
            raise

    def request_teardown(self, conversation: Conversation, *, at: str) -> bool:
        """Touch an inactive conversation so the stream consumer checks again that nothing of it
        runs (False when it changed meanwhile)."""
        condition = _as_read(conversation)
        try:
            client("dynamodb").update_item(
                TableName=self.table_name,
                Key={"conversation_id": {"S": conversation.conversation_id}},
                UpdateExpression="SET teardown_requested_at = :requested",
                ConditionExpression=condition["ConditionExpression"],
                ExpressionAttributeNames=condition["ExpressionAttributeNames"],
                ExpressionAttributeValues={**condition["ExpressionAttributeValues"], ":requested": {"S": at}},
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _reactivate_update(self, conversation: Conversation, at: str, last_active_at: int) -> dict[str, Any]:
        entry = TimelineEntry(phase="STATUS$QUEUED", at=at).model_dump()
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": {"conversation_id": {"S": conversation.conversation_id}},
                "UpdateExpression": "SET conversation_status = :starting, runtime_status = :queued, updated_at = :at, "
                "last_active_at = :last_active, active_user_id = :user, timeline = :timeline, #run = :next_run "
                # Placeholders for every name: some are DynamoDB reserved words (`start`).
                "REMOVE " + ", ".join(f"#per_run{index}" for index in range(len(_PER_RUN_FIELDS))),
                "ConditionExpression": "conversation_status IN (:stopped, :error) AND user_id = :user AND #run = :run",
                "ExpressionAttributeNames": {
                    "#run": "run",
                    **{f"#per_run{index}": name for index, name in enumerate(_PER_RUN_FIELDS)},
                },
                "ExpressionAttributeValues": {
                    ":starting": {"S": ConversationStatus.STARTING.value},
                    ":queued": {"S": "STATUS$QUEUED"},
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

    def _transact_as_read(self, items: list[dict[str, Any]], *, slot_index: int | None = None) -> None:
        """`_transact` where items[0] writes the conversation as the caller read it: its failed
        condition means the conversation changed (ConversationChanged)."""
        try:
            client("dynamodb").transact_write_items(TransactItems=items)
        except ClientError as error:
            code = error_code(error)
            if code == "TransactionCanceledException":
                reasons = error.response.get("CancellationReasons", [])
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    raise ConversationChanged() from error
                self._raise_cancellation(error, items, slot_index)
            if code in THROTTLING_CODES:
                raise WriteContention(code) from error
            raise

    @classmethod
    def conversation_from_item(cls, item: dict[str, Any]) -> Conversation:
        """A conversation from its item in DynamoDB's attribute-value form (also a stream image)."""
        return cls._conversation(item)

    # -- helpers ---------------------------------------------------------------------------
    def _put_new(self, conversation: Conversation) -> dict[str, Any]:
        values = conversation.model_dump(mode="json", exclude_none=True)
        values["active_user_id"] = conversation.user_id
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": to_item(values),
                "ConditionExpression": "attribute_not_exists(conversation_id)",
                # A keyed create that finds its conversation answers with it, with no extra read.
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _take_slot(self, user_id: str, limit: int) -> dict[str, Any]:
        """The transaction item that takes one of the user's `limit` active slots."""
        return {
            "Update": {
                "TableName": self._users_table,
                "Key": quota_key(user_id),
                "UpdateExpression": "ADD active_count :one",
                "ConditionExpression": "attribute_not_exists(active_count) OR active_count < :limit",
                "ExpressionAttributeValues": {":one": {"N": "1"}, ":limit": {"N": str(limit)}},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _transact(self, items: list[dict[str, Any]], *, slot_index: int | None = None) -> None:
        """`slot_index`: the position of the `_take_slot` item, whose refusal is the limit."""
        try:
            client("dynamodb").transact_write_items(TransactItems=items)
        except ClientError as error:
            code = error_code(error)
            if code == "TransactionCanceledException":
                self._raise_cancellation(error, items, slot_index)
            if code in THROTTLING_CODES:
                raise WriteContention(code) from error
            raise

    def _raise_cancellation(self, error: ClientError, items: list[dict[str, Any]], slot_index: int | None) -> None:
        """The refused condition, by the position of its item: the new conversation's Put (id
        taken), the slot (limit reached), or another conversation's update (no longer active)."""
        reasons = error.response.get("CancellationReasons", [])
        for index, (item, reason) in enumerate(zip(items, reasons, strict=False)):
            if reason.get("Code") != "ConditionalCheckFailed":
                continue
            if "Put" in item:
                stored = reason.get("Item")
                raise ConversationIdTaken(self._conversation(stored) if stored else None) from error
            if index == slot_index:
                raise ActiveLimitReached(active_count_from_item(reason.get("Item", {}))) from error
            raise ConversationNoLongerActive() from error
        raise WriteContention("TransactionCanceledException") from error

    @staticmethod
    def _conversation(item: dict[str, Any]) -> Conversation:
        values = from_item(item)
        return Conversation.model_validate({key: values[key] for key in Conversation.model_fields if key in values})
