"""The safety net behind "every conversation ends RUNNING or ERROR".

The workflow ends every conversation it runs, but two failures happen outside it: a start that
exhausted the stream's retries (its record is in the dead-letter queue), and a RecordFailure
that failed through all its retries. Such a conversation would stay STARTING and hold a slot.
Every few minutes this closes whatever has been STARTING, untouched, for longer than any
workflow can run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conversation_service.config import ServiceConfig
from conversation_service.logic.clock import now_iso
from conversation_service.models.domain import ConversationStatus
from conversation_service.observability import logger, record_conversation_error
from conversation_service.ports import ConversationStore

STALE_START = "INTERNAL"


class StaleStartSweeper:
    def __init__(self, config: ServiceConfig, conversations: ConversationStore) -> None:
        self._config = config
        self._conversations = conversations

    def sweep(self, now: datetime | None = None) -> list[str]:
        """Close stale STARTING conversations; returns the ids closed."""
        moment = now or datetime.now(UTC)
        cutoff = (moment - timedelta(seconds=self._config.stale_start_seconds)).isoformat(timespec="milliseconds")
        closed = []
        for conversation in self._conversations.starting_not_updated_since(cutoff.replace("+00:00", "Z")):
            minutes = self._config.stale_start_seconds // 60
            if self._conversations.deactivate(
                conversation.conversation_id,
                conversation.user_id,
                ConversationStatus.ERROR,
                at=now_iso(),
                error_code_value=STALE_START,
                error_message=(
                    f"The conversation made no progress for {minutes} minutes while starting "
                    f"(last at {conversation.runtime_status}); create it again or start it again."
                ),
                error_details={"phase": conversation.runtime_status, "updated_at": conversation.updated_at},
            ):
                record_conversation_error(STALE_START)
                closed.append(conversation.conversation_id)
        if closed:
            logger.warning("closed stale starting conversations", extra={"conversation_ids": closed})
        return closed
