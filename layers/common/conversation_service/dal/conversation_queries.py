"""Reads of many conversations, or of a conversation with what a create needs: the user's pages
(newest first), their least recently active conversation, STARTING ones left behind, and the
one-read snapshot a create starts from."""

from __future__ import annotations

import random
import time
from typing import Any

from conversation_service.dal.aws import client, translated
from conversation_service.dal.conversation_records import ConversationRecords, conversation_from_item
from conversation_service.dal.users import active_count_from_item, quota_key, settings_from_item, settings_key
from conversation_service.models.domain import Conversation, ConversationStatus, CreationSnapshot
from conversation_service.models.errors import WriteContention

SNAPSHOT_READ_ATTEMPTS = 4
# The ByUser index's key plus the table's: where a listing continues.
PAGE_KEY = ("conversation_id", "user_id", "created_at")


class ConversationQueries(ConversationRecords):
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
            with translated():
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
            existing=conversation_from_item(conversations[0]) if conversations else None,
        )

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
        return conversation_from_item(items[0]) if items else None

    def starting_not_updated_since(self, cutoff_iso: str, *, limit: int = 500) -> list[Conversation]:
        """STARTING conversations untouched since `cutoff_iso` (a paginated scan: the sweeper's
        safety net runs every few minutes and reads only the status and dates it filters on)."""
        found: list[Conversation] = []
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": "conversation_status = :starting AND updated_at < :cutoff",
            "ExpressionAttributeValues": {
                ":starting": {"S": ConversationStatus.STARTING.value},
                ":cutoff": {"S": cutoff_iso},
            },
        }
        while len(found) < limit:
            response = client("dynamodb").scan(**request)
            found += [conversation_from_item(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found[:limit]

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
            last_key = {name: found[-1][name] for name in PAGE_KEY}
        position = {name: str(last_key[name]["S"]) for name in PAGE_KEY} if last_key else None
        return [conversation_from_item(item) for item in found], position
