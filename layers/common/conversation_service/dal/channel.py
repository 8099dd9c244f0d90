"""The channel table: a conversation's transcript and inbox, and the S3 objects behind them.

Keys: `conversation_id` (partition) and `sk`:

- `META`: the transcript's counters (`last_seq`, `event_count`, `event_bytes`) and `inbox_seq`.
- `EVENT#<seq, 12 digits>`: one agent event, in transcript order: its envelope (`event_id`,
  `timestamp`, `source`, `kind`), its redacted body (`body`, JSON text) or where the body is in
  S3 (`s3_key`) when it is big, its size, and `error_code` when the body was refused (too large).
- `EVENTID#<sha256 of the event id>`: the seq an event id got, so a redelivery stores nothing.
- `INBOX#<seq, 10 digits>`: a message or confirmation the sandbox has not acknowledged yet.

A batch of events is written by one transaction that also moves `META.last_seq` from the value
it read: writers of one conversation are serialised, seqs are dense per batch and only grow,
so a reader that continues after the last seq it saw never misses an event.

Bodies over `INLINE_BODY_BYTES`, and the workspace snapshot, live in the context bucket under
`conversation-events/<id>/`: outside `conversations/` and its 90-day expiry, since a transcript
lives as long as its conversation. `purge` removes both (the stream consumer, on DELETE).
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from conversation_service.dal.aws import (
    ITEM_CONDITION_FAILED,
    TRANSACTION_CANCELED,
    client,
    error_code,
    from_item,
    is_transient,
    to_item,
)
from conversation_service.dal.context_store import ContextStore
from conversation_service.dal.conversation_records import ACTIVE_VALUES, IS_ACTIVE
from conversation_service.models.errors import ChannelContention, InboxRefused

META = "META"
EVENT_PREFIX = "EVENT#"
EVENT_ID_PREFIX = "EVENTID#"
INBOX_PREFIX = "INBOX#"
S3_PREFIX = "conversation-events/"
# Bodies up to this size stay on the DynamoDB item; larger ones go to S3 (an S3 PUT costs about
# as much as 8 KB of transactional DynamoDB writes, and a read of the page then needs no GET).
INLINE_BODY_BYTES = 8 * 1024
# Two items per event plus META: within TransactWriteItems' 100 items and 4 MB.
EVENTS_PER_TRANSACTION = 40
MAX_WRITE_ATTEMPTS = 30


def event_sort_key(seq: int) -> str:
    return f"{EVENT_PREFIX}{seq:012d}"


def inbox_sort_key(seq: int) -> str:
    return f"{INBOX_PREFIX}{seq:010d}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class PreparedEvent:
    """An event ready to store: envelope fields, redacted body (None when refused), its size."""

    event_id: str
    timestamp: str
    source: str
    kind: str
    body: str | None
    size: int
    error_code: str | None = None


@dataclass
class AppendResult:
    stored: int = 0
    duplicates: int = 0
    limit_reached: bool = False


class ChannelStore:
    def __init__(self, table_name: str, conversations_table: str, bucket: str) -> None:
        self.table_name = table_name
        self._conversations_table = conversations_table
        self._bucket = bucket

    # -- the transcript --------------------------------------------------------------------
    def append_events(
        self, conversation_id: str, events: list[PreparedEvent], *, max_events: int, max_bytes: int
    ) -> AppendResult:
        """Store the events after those stored, in the given order, each event id once, until
        the conversation's caps."""
        result = AppendResult()
        pending = self._put_big_bodies(conversation_id, events)
        for _attempt in range(MAX_WRITE_ATTEMPTS * max(1, len(pending) // EVENTS_PER_TRANSACTION + 1)):
            if not pending:
                return result
            meta = self._meta(conversation_id)
            last_seq, count, total = (int(meta.get(name, 0)) for name in ("last_seq", "event_count", "event_bytes"))
            chunk: list[tuple[PreparedEvent, dict[str, Any]]] = []
            for event, item in pending[:EVENTS_PER_TRANSACTION]:
                if (
                    count + len(chunk) + 1 > max_events
                    or total + sum(e.size for e, _ in chunk) + event.size > max_bytes
                ):
                    break
                chunk.append((event, item))
            if not chunk:
                duplicates = self._already_stored(conversation_id, [event for event, _ in pending])
                result.duplicates += len(duplicates)
                result.limit_reached = len(duplicates) < len(pending)
                return result
            outcome = self._write_chunk(conversation_id, chunk, last_seq, count, total)
            if outcome is None:  # another writer moved META first: read it again
                time.sleep(random.uniform(0.005, 0.03))
                continue
            if outcome:  # these event ids are stored already: drop them and write the rest
                result.duplicates += len(outcome)
                pending = [(event, item) for event, item in pending if event.event_id not in outcome]
                continue
            result.stored += len(chunk)
            pending = pending[len(chunk) :]
        raise ChannelContention()

    def _put_big_bodies(
        self, conversation_id: str, events: list[PreparedEvent]
    ) -> list[tuple[PreparedEvent, dict[str, Any]]]:
        """Write bodies too big for the item to S3 first (so an index item never points at nothing);
        return each event with the attributes its item gets."""
        prepared: list[tuple[PreparedEvent, dict[str, Any]]] = []
        for event in events:
            attributes: dict[str, Any] = {
                "event_id": event.event_id,
                "timestamp": event.timestamp,
                "source": event.source,
                "kind": event.kind,
                "size": event.size,
                "error_code": event.error_code,
            }
            if event.body is not None and event.size > INLINE_BODY_BYTES:
                # Named by content too: a redelivery with another body never overwrites the stored one.
                key = f"{S3_PREFIX}{conversation_id}/events/{_digest(event.event_id)}-{_digest(event.body)[:16]}.json"
                client("s3").put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=event.body.encode(),
                    ContentType="application/json",
                    # No encryption header: the bucket's default (the stack's key), as ContextStore.
                )
                attributes["s3_key"] = key
            elif event.body is not None:
                attributes["body"] = event.body
            prepared.append((event, attributes))
        return prepared

    def _write_chunk(
        self,
        conversation_id: str,
        chunk: list[tuple[PreparedEvent, dict[str, Any]]],
        last_seq: int,
        count: int,
        total: int,
    ) -> set[str] | None:
        """One transaction: META moves from `last_seq`, each event gets the next seq. Returns an
        empty set when written, the duplicate event ids when some were stored before, None when
        META moved meanwhile."""
        new_last = last_seq + len(chunk)
        meta_update: dict[str, Any] = {
            "Update": {
                "TableName": self.table_name,
                "Key": {"conversation_id": {"S": conversation_id}, "sk": {"S": META}},
                "UpdateExpression": "SET last_seq = :new_last, event_count = :count, event_bytes = :bytes",
                "ConditionExpression": "attribute_not_exists(last_seq)" if last_seq == 0 else "last_seq = :old_last",
                "ExpressionAttributeValues": {
                    ":new_last": {"N": str(new_last)},
                    ":count": {"N": str(count + len(chunk))},
                    ":bytes": {"N": str(total + sum(event.size for event, _ in chunk))},
                    **({} if last_seq == 0 else {":old_last": {"N": str(last_seq)}}),
                },
            }
        }
        items: list[dict[str, Any]] = [meta_update]
        for offset, (event, attributes) in enumerate(chunk, start=1):
            seq = last_seq + offset
            items.append(self._put_new({"sk": event_sort_key(seq), "seq": seq, **attributes}, conversation_id))
            items.append(
                self._put_new(
                    {"sk": EVENT_ID_PREFIX + _digest(event.event_id), "seq": seq, "event_id": event.event_id},
                    conversation_id,
                )
            )
        try:
            client("dynamodb").transact_write_items(TransactItems=items)
        except ClientError as error:
            if is_transient(error):
                return None
            if error_code(error) != TRANSACTION_CANCELED:
                raise
            reasons = error.response.get("CancellationReasons", [])
            failed = [index for index, reason in enumerate(reasons) if reason.get("Code") == ITEM_CONDITION_FAILED]
            duplicates = {chunk[(index - 1) // 2][0].event_id for index in failed if index > 0 and index % 2 == 0}
            if duplicates:
                return duplicates
            return None  # META moved, or a conflicting transaction: read again
        return set()

    def _put_new(self, values: dict[str, Any], conversation_id: str) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": to_item({"conversation_id": conversation_id, **values}),
                "ConditionExpression": "attribute_not_exists(sk)",
            }
        }

    def _already_stored(self, conversation_id: str, events: list[PreparedEvent]) -> set[str]:
        stored: set[str] = set()
        ids = list(dict.fromkeys(event.event_id for event in events))
        for start in range(0, len(ids), 100):
            keys = [
                {"conversation_id": {"S": conversation_id}, "sk": {"S": EVENT_ID_PREFIX + _digest(event_id)}}
                for event_id in ids[start : start + 100]
            ]
            request: dict[str, Any] = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
            while request:
                response = client("dynamodb").batch_get_item(RequestItems=request)
                stored.update(str(item["event_id"]["S"]) for item in response["Responses"].get(self.table_name, []))
                request = response.get("UnprocessedKeys") or {}
        return stored

    def events_after(
        self, conversation_id: str, after_seq: int, limit: int, *, max_bytes: int = 4 * 1024 * 1024
    ) -> list[dict[str, Any]]:
        """Up to `limit` events with a seq above `after_seq`, oldest first, bodies loaded, at most
        `max_bytes` of bodies (but always the first: an answer stays within Lambda's 6 MB)."""
        response = client("dynamodb").query(
            TableName=self.table_name,
            KeyConditionExpression="conversation_id = :id AND sk BETWEEN :first AND :last",
            ExpressionAttributeValues={
                ":id": {"S": conversation_id},
                ":first": {"S": event_sort_key(after_seq + 1)},
                ":last": {"S": event_sort_key(10**12 - 1)},
            },
            ConsistentRead=True,
            Limit=limit,
        )
        events: list[dict[str, Any]] = []
        total = 0
        for event in (from_item(item) for item in response.get("Items", [])):
            total += int(event.get("size", 0))
            if events and total > max_bytes:
                break
            if key := event.pop("s3_key", None):
                event["body"] = client("s3").get_object(Bucket=self._bucket, Key=key)["Body"].read().decode()
            events.append(event)
        return events

    def _meta(self, conversation_id: str) -> dict[str, Any]:
        response = client("dynamodb").get_item(
            TableName=self.table_name,
            Key={"conversation_id": {"S": conversation_id}, "sk": {"S": META}},
            ConsistentRead=True,
        )
        return from_item(response["Item"]) if "Item" in response else {}

    # -- the inbox -------------------------------------------------------------------------------
    def enqueue(
        self,
        conversation_id: str,
        user_id: str,
        item: dict[str, Any],
        *,
        last_active_at: int,
        answers_confirmation_at: str | None = None,
    ) -> int:
        """Append a message (or, with `answers_confirmation_at`, a confirmation answer) to the
        inbox of the user's active conversation, in one transaction with the condition on the
        conversation. Returns the item's seq. Raises InboxRefused when the condition fails."""
        condition = f"user_id = :user AND {IS_ACTIVE}"
        update = "SET last_active_at = :now"
        values: dict[str, Any] = {
            ":user": {"S": user_id},
            **ACTIVE_VALUES,
            ":now": {"N": str(last_active_at)},
        }
        if answers_confirmation_at is not None:
            condition += " AND agent_status = :waiting AND attribute_not_exists(confirmation_answered_at)"
            update += ", confirmation_answered_at = :answered"
            values[":waiting"] = {"S": "waiting_for_confirmation"}
            values[":answered"] = {"S": answers_confirmation_at}
        touch_conversation = {
            "Update": {
                "TableName": self._conversations_table,
                "Key": {"conversation_id": {"S": conversation_id}},
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeValues": values,
            }
        }
        for _attempt in range(MAX_WRITE_ATTEMPTS):
            last = int(self._meta(conversation_id).get("inbox_seq", 0))
            seq = last + 1
            move_meta: dict[str, Any] = {
                "Update": {
                    "TableName": self.table_name,
                    "Key": {"conversation_id": {"S": conversation_id}, "sk": {"S": META}},
                    "UpdateExpression": "SET inbox_seq = :seq",
                    "ConditionExpression": "attribute_not_exists(inbox_seq)" if last == 0 else "inbox_seq = :last",
                    "ExpressionAttributeValues": {
                        ":seq": {"N": str(seq)},
                        **({} if last == 0 else {":last": {"N": str(last)}}),
                    },
                }
            }
            put = self._put_new({"sk": inbox_sort_key(seq), "seq": seq, **item}, conversation_id)
            try:
                client("dynamodb").transact_write_items(TransactItems=[touch_conversation, move_meta, put])
            except ClientError as error:
                if error_code(error) == TRANSACTION_CANCELED:
                    reasons = error.response.get("CancellationReasons", [])
                    if reasons and reasons[0].get("Code") == ITEM_CONDITION_FAILED:
                        raise InboxRefused() from error
                elif not is_transient(error):
                    raise
                time.sleep(random.uniform(0.005, 0.03))
                continue
            return seq
        raise ChannelContention()

    def pending_inbox(self, conversation_id: str, limit: int = 20) -> list[dict[str, Any]]:
        response = client("dynamodb").query(
            TableName=self.table_name,
            KeyConditionExpression="conversation_id = :id AND begins_with(sk, :inbox)",
            ExpressionAttributeValues={":id": {"S": conversation_id}, ":inbox": {"S": INBOX_PREFIX}},
            ConsistentRead=True,
            Limit=limit,
        )
        return [from_item(item) for item in response.get("Items", [])]

    def acknowledge(self, conversation_id: str, seq: int) -> None:
        """The sandbox handed the item over: it is not delivered again (repeating is harmless)."""
        client("dynamodb").delete_item(
            TableName=self.table_name,
            Key={"conversation_id": {"S": conversation_id}, "sk": {"S": inbox_sort_key(seq)}},
        )

    # -- the workspace ---------------------------------------------------------------------------
    def _workspace_key(self, conversation_id: str) -> str:
        return f"{S3_PREFIX}{conversation_id}/workspace.json"

    def put_workspace(self, conversation_id: str, snapshot: dict[str, Any]) -> None:
        ContextStore(self._bucket).put_json(self._workspace_key(conversation_id), snapshot)

    def get_workspace(self, conversation_id: str) -> dict[str, Any] | None:
        try:
            return ContextStore(self._bucket).get_json(self._workspace_key(conversation_id))
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                return None
            raise

    # -- deletion ----------------------------------------------------------------------------------
    def purge(self, conversation_id: str) -> int:
        """Remove everything the channel holds for the conversation (items and S3 objects)."""
        dynamodb = client("dynamodb")
        removed = 0
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "conversation_id = :id",
            "ExpressionAttributeValues": {":id": {"S": conversation_id}},
            "ProjectionExpression": "conversation_id, sk",
        }
        while True:
            page = dynamodb.query(**request)
            keys = page.get("Items", [])
            for start in range(0, len(keys), 25):
                writes = {self.table_name: [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]}
                for attempt in range(10):
                    unprocessed = dynamodb.batch_write_item(RequestItems=writes).get("UnprocessedItems") or {}
                    if not unprocessed:
                        break
                    writes = unprocessed
                    time.sleep(min(1.0, 0.05 * 2**attempt))
                else:
                    raise ChannelContention()
            removed += len(keys)
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return removed + ContextStore(self._bucket).purge_prefix(f"{S3_PREFIX}{conversation_id}/")
