"""How a conversation is stored in the conversations table, and the writes of one item that no
other rule guards: the item format, its key, the condition "as the caller read it", the title.

Keys: `conversation_id`. Indexes: `ByUser` (user_id, created_at) for listings and the sparse
`ActiveByUser` (active_user_id, last_active_at): only STARTING/RUNNING items carry
`active_user_id`, so it lists exactly the user's active conversations, least recently active first.
"""

from __future__ import annotations

from typing import Any

from conversation_service.dal.aws import client, from_item, write_if
from conversation_service.models.domain import Conversation, ConversationStatus

# The condition that a conversation is active, and its values (STARTING or RUNNING).
IS_ACTIVE = "conversation_status IN (:starting, :running)"
ACTIVE_VALUES = {
    ":starting": {"S": ConversationStatus.STARTING.value},
    ":running": {"S": ConversationStatus.RUNNING.value},
}


def conversation_key(conversation_id: str) -> dict[str, Any]:
    return {"conversation_id": {"S": conversation_id}}


def conversation_from_item(item: dict[str, Any]) -> Conversation:
    """A conversation from its item in DynamoDB's attribute-value form (also a stream image)."""
    values = from_item(item)
    return Conversation.model_validate({key: values[key] for key in Conversation.model_fields if key in values})


def as_read(conversation: Conversation) -> dict[str, Any]:
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


class ConversationRecords:
    """The conversations table's items one at a time (and the users table, where slots count)."""

    def __init__(self, table_name: str, users_table_name: str) -> None:
        self.table_name = table_name
        self._users_table = users_table_name

    def get(self, conversation_id: str, *, consistent: bool = False) -> Conversation | None:
        response = client("dynamodb").get_item(
            TableName=self.table_name, Key=conversation_key(conversation_id), ConsistentRead=consistent
        )
        return conversation_from_item(response["Item"]) if "Item" in response else None

    @staticmethod
    def conversation_from_item(item: dict[str, Any]) -> Conversation:
        return conversation_from_item(item)

    def rename(self, conversation_id: str, user_id: str, title: str, *, at: str) -> bool:
        """Set the title of the user's conversation (False if it is not theirs or is gone)."""
        return write_if(
            "update_item",
            TableName=self.table_name,
            Key=conversation_key(conversation_id),
            UpdateExpression="SET #title = :title, updated_at = :at",
            ConditionExpression="user_id = :user",
            ExpressionAttributeNames={"#title": "title"},
            ExpressionAttributeValues={":title": {"S": title}, ":at": {"S": at}, ":user": {"S": user_id}},
        )
