"""Finding, renaming, stopping, starting again and deleting conversations; the user's quota.

Every operation here only changes the conversation item, with conditional writes through
`ConversationStore` (the status and the user's active counter move in one transaction). What
must happen outside DynamoDB when a conversation stops, starts again or goes (stop the workflow
execution and the sandbox task, start the next run's workflow, delete the stored context,
publish the change) is done by the table's stream consumer (`logic/conversation_stream.py`), in one
place, in the order the changes happened. So these calls are quick, and a racing stop, start,
delete, workflow step or concurrency-policy closure cannot leave a slot counted twice or a
sandbox running.

Ownership: a conversation of another user answers exactly as a missing one (404).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from typing import Any

from conversation_service.config import ServiceConfig
from conversation_service.logic.clock import now_epoch_ms, now_iso
from conversation_service.logic.conversations import usable_settings
from conversation_service.logic.slot_policy import SlotPolicy
from conversation_service.models.domain import ACTIVE_STATUSES, Conversation, ConversationStatus
from conversation_service.models.errors import (
    ConversationChanged,
    ConversationConflict,
    ConversationNotFound,
    ConversationNotStartable,
    InvalidPageToken,
    PageTokenInvalid,
    WriteContention,
)
from conversation_service.models.lifecycle import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ConversationActionResponse,
    ConversationPage,
    ConversationSummary,
    QuotaView,
)
from conversation_service.observability import logger
from conversation_service.ports import ConversationStore, PageTokenSealer, UserStore

STOPPED_BY_USER = "CONVERSATION$STOPPED_BY_USER"
STARTABLE_STATUSES = frozenset({ConversationStatus.STOPPED, ConversationStatus.ERROR})
# Stop and delete: a conversation read again after it changed under us (start again goes by the
# slot policy's budget instead: logic/slot_policy.py).
MAX_ATTEMPTS = 8
PAGE_TOKEN_VERSION = 1


class LifecycleService:
    def __init__(
        self,
        config: ServiceConfig,
        conversations: ConversationStore,
        users: UserStore,
        page_tokens: PageTokenSealer,
        *,
        slot_policy: SlotPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._conversations = conversations
        self._users = users
        self._page_tokens = page_tokens
        self._slots = slot_policy or SlotPolicy.from_config(config, conversations, sleep=sleep)
        self._sleep = sleep

    # -- reading -----------------------------------------------------------------------------
    def owned(self, user_id: str, conversation_id: str, *, consistent: bool = True) -> Conversation:
        # conversation_id is decoded and validated at the HTTP boundary (http_routes.py).
        conversation = self._conversations.get(conversation_id, consistent=consistent)
        if conversation is None or conversation.user_id != user_id:
            raise ConversationNotFound()
        return conversation

    def search(
        self,
        user_id: str,
        *,
        page_id: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        selected_repository: str | None = None,
        conversation_trigger: str | None = None,
    ) -> ConversationPage:
        """The user's conversations, newest first, `limit` (1..100) at a time."""
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        filters = _filters_digest(selected_repository, conversation_trigger)
        start_after = self._open_page_id(user_id, page_id, filters) if page_id else None
        conversations, position = self._conversations.page_for_user(
            user_id,
            limit=limit,
            start_after=start_after,
            repository=selected_repository,
            trigger=conversation_trigger,
        )
        next_page_id = None
        if position is not None:
            payload = {"v": PAGE_TOKEN_VERSION, "after": position, "filters": filters}
            next_page_id = self._page_tokens.seal(payload, owner=user_id)
        return ConversationPage(
            results=[ConversationSummary.of(conversation) for conversation in conversations],
            next_page_id=next_page_id,
        )

    def _open_page_id(self, user_id: str, page_id: str, filters: str) -> dict[str, str]:
        try:
            payload = self._page_tokens.open(page_id, owner=user_id)
        except PageTokenInvalid as invalid:
            # Tampered, made up, or issued to someone else: all look the same from here.
            logger.info("page token refused", extra={"reason": str(invalid)})
            raise InvalidPageToken() from invalid
        after = payload.get("after")
        if payload.get("v") != PAGE_TOKEN_VERSION or not isinstance(after, dict):
            raise InvalidPageToken()
        if payload.get("filters") != filters:
            raise InvalidPageToken("This page_id belongs to a listing with other filters; start again without it")
        position = {key: after.get(key) for key in ("conversation_id", "user_id", "created_at")}
        if not all(isinstance(value, str) for value in position.values()) or position["user_id"] != user_id:
            raise InvalidPageToken()
        return {key: str(value) for key, value in position.items()}

    def quota(self, user_id: str) -> QuotaView:
        settings = self._users.get_settings(user_id)
        limit = (settings.max_active_conversations if settings else None) or self._config.max_active_conversations
        active = self._users.active_count(user_id)
        return QuotaView(
            limit=limit, active=active, available=max(0, limit - active), policy=self._config.concurrency_policy.value
        )

    # -- changing ----------------------------------------------------------------------------
    def rename(self, user_id: str, conversation_id: str, title: str) -> bool:
        self.owned(user_id, conversation_id, consistent=False)
        if not self._conversations.rename(conversation_id, user_id, title, at=now_iso()):
            raise ConversationNotFound()  # deleted meanwhile
        return True

    def stop(self, user_id: str, conversation_id: str) -> ConversationActionResponse:
        """STOPPED, slot freed; the stream consumer then stops the execution and the task.

        Stopping a conversation that is not active changes nothing (an ERROR keeps its error) but
        asks the consumer to check again that nothing of it runs: stop is always safe to repeat.
        """
        for attempt in range(MAX_ATTEMPTS):
            conversation = self.owned(user_id, conversation_id)
            if conversation.conversation_status in ACTIVE_STATUSES:
                if self._conversations.deactivate(
                    conversation_id,
                    user_id,
                    ConversationStatus.STOPPED,
                    at=now_iso(),
                    reason=STOPPED_BY_USER,
                    run=conversation.run,
                ):
                    logger.info("conversation stopped", extra={"conversation_id": conversation_id})
                    return _answer(conversation_id, ConversationStatus.STOPPED, "Conversation stopped")
            elif self._conversations.request_teardown(conversation, at=now_iso()):
                return _answer(conversation_id, conversation.conversation_status, "Conversation was not running")
            self._backoff(attempt)  # it changed under us: read it again
        raise ConversationConflict()

    def start(self, user_id: str, conversation_id: str) -> ConversationActionResponse:
        """Start a STOPPED or ERROR conversation again, as its next run, under the same rules as
        a creation: usable settings, and the slot policy (one transaction per attempt)."""
        conversation = self.owned(user_id, conversation_id)
        answer = _not_startable_answer(conversation)
        if answer is not None:
            return answer
        settings = usable_settings(self._users, user_id)
        limit = settings.max_active_conversations or self._config.max_active_conversations
        return self._slots.claim(_NextRun(self, conversation), limit)

    def delete(self, user_id: str, conversation_id: str) -> bool:
        """Remove the record (freeing its slot if active); the stream consumer then stops what
        runs and deletes its stored context. A second delete finds nothing: 404."""
        for attempt in range(MAX_ATTEMPTS):
            conversation = self.owned(user_id, conversation_id)
            try:
                self._conversations.delete(conversation)
            except (ConversationChanged, WriteContention):
                self._backoff(attempt)
                continue
            logger.info("conversation deleted", extra={"conversation_id": conversation_id})
            return True
        raise ConversationConflict()

    def _backoff(self, attempt: int) -> None:
        self._sleep(min(0.5, 0.01 * 2**attempt) * random.random())


class _NextRun:
    """A start again's claim on a slot: the conversation's next run, within the limit or in place
    of the least recently active one. After it changed under us, it is read again first."""

    def __init__(self, lifecycle: LifecycleService, conversation: Conversation) -> None:
        self._lifecycle = lifecycle
        self._conversation = conversation
        self._stale = False

    @property
    def user_id(self) -> str:
        return self._conversation.user_id

    def within_limit(self, limit: int) -> ConversationActionResponse:
        store = self._lifecycle._conversations
        return self._start(
            lambda conversation, at, last_active_at: store.reactivate_within_limit(
                conversation, limit, at=at, last_active_at=last_active_at
            )
        )

    def replacing(self, victim: Conversation, *, reason: str) -> ConversationActionResponse:
        store = self._lifecycle._conversations
        return self._start(
            lambda conversation, at, last_active_at: store.reactivate_replacing(
                conversation, victim, reason=reason, at=at, last_active_at=last_active_at
            )
        )

    def _start(self, write: Callable[[Conversation, str, int], int]) -> ConversationActionResponse:
        if self._stale:
            self._conversation = self._lifecycle.owned(self.user_id, self._conversation.conversation_id)
            self._stale = False
        conversation = self._conversation
        answer = _not_startable_answer(conversation)
        if answer is not None:
            return answer
        try:
            run = write(conversation, now_iso(), now_epoch_ms())
        except ConversationChanged:
            self._stale = True
            raise
        logger.info("conversation started again", extra={"conversation_id": conversation.conversation_id, "run": run})
        return _answer(conversation.conversation_id, ConversationStatus.STARTING, "Conversation starting")


def _not_startable_answer(conversation: Conversation) -> ConversationActionResponse | None:
    """An active conversation answers that it is; one that cannot start again is refused."""
    status = conversation.conversation_status
    if status in ACTIVE_STATUSES:
        return _answer(conversation.conversation_id, status, "Conversation is already active")
    if status not in STARTABLE_STATUSES:
        raise ConversationNotStartable()
    return None


def _answer(conversation_id: str, status: ConversationStatus, message: str) -> ConversationActionResponse:
    return ConversationActionResponse(conversation_id=conversation_id, message=message, conversation_status=status)


def _filters_digest(repository: str | None, trigger: str | None) -> str:
    """A page_id only continues the listing it came from (same filters)."""
    filters: dict[str, Any] = {"repository": repository, "trigger": trigger}
    return hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]
