"""A conversation going away: deleted (an active one frees its slot in the same transaction),
or touched so the stream consumer checks again that nothing of it still runs."""

from __future__ import annotations

from typing import Any

from conversation_service.dal.active_slots import ActiveSlots
from conversation_service.dal.aws import Guarded, client, transact, translated, write_if
from conversation_service.dal.conversation_records import as_read, conversation_key
from conversation_service.models.domain import Conversation
from conversation_service.models.errors import ConversationChanged


def _changed(_: dict[str, Any]) -> Exception:
    return ConversationChanged()


class ConversationTeardown(ActiveSlots):
    def delete(self, conversation: Conversation) -> None:
        """Remove the conversation as it was read; an active one frees its slot in the same
        transaction. Raises ConversationChanged when it changed or went meanwhile."""
        delete: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": conversation_key(conversation.conversation_id),
            **as_read(conversation),
        }
        if conversation.is_active:
            transact([Guarded({"Delete": delete}, _changed), self._release_slot(conversation.user_id)])
            return
        with translated(condition_refused=ConversationChanged):
            client("dynamodb").delete_item(**delete)

    def request_teardown(self, conversation: Conversation, *, at: str) -> bool:
        """Touch an inactive conversation so the stream consumer checks again that nothing of it
        runs (False when it changed meanwhile)."""
        condition = as_read(conversation)
        return write_if(
            "update_item",
            TableName=self.table_name,
            Key=conversation_key(conversation.conversation_id),
            UpdateExpression="SET teardown_requested_at = :requested",
            ConditionExpression=condition["ConditionExpression"],
            ExpressionAttributeNames=condition["ExpressionAttributeNames"],
            ExpressionAttributeValues={**condition["ExpressionAttributeValues"], ":requested": {"S": at}},
        )
