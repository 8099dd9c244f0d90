"""The slot policy: the one rule for a conversation becoming active, used by a create
(`logic/conversations.py`), a start again (`logic/lifecycle.py`) and so by a create from an event
(`logic/event_intake.py`, which creates through `ConversationService.create`):

1. a free slot: the write takes one of the user's `limit` active slots;
2. none, under `close_oldest` (the spec): the write closes the user's least recently active
   conversation in the same transaction, and the slot passes to the new one (its
   `status_reason` says why: TOO_MANY_CONVERSATIONS);
3. none, under `reject`: 429 CONCURRENCY_LIMIT_REACHED with Retry-After.

The writes are the data-access layer's primitives (`dal/active_slots.py`), each one transaction
with its conditions, so the limit holds under any interleaving. Losing a race (another write took
the last slot, the chosen oldest closed meanwhile, the conversation changed, DynamoDB asked us to
retry) costs one attempt of one budget, MAX_ATTEMPTS with jittered backoff; a spent budget is 503.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Protocol

from conversation_service.config import ConcurrencyPolicy, ServiceConfig
from conversation_service.models.domain import Conversation
from conversation_service.models.errors import (
    ActiveLimitReached,
    ConcurrencyLimitReached,
    ConversationChanged,
    ConversationConflict,
    ConversationNoLongerActive,
    WriteContention,
)

TOO_MANY_CONVERSATIONS = "AGENT_ERROR$TOO_MANY_CONVERSATIONS"
# Enough for a burst of parallel creates by one user to settle (each round has one winner per
# victim); bounded so a request never nears the Lambda timeout (about 6 s of jittered waits at most).
MAX_ATTEMPTS = 60
# Lost races the policy tries again: the write's conditions saw a world that moved on.
_RACES = (ConversationNoLongerActive, ConversationChanged, WriteContention)


class ActiveConversations(Protocol):
    def least_recently_active(self, user_id: str) -> Conversation | None: ...


class SlotClaim[T](Protocol):
    """The two writes by which one conversation becomes active; either may raise
    ActiveLimitReached (within_limit only), or a lost race (`_RACES`), to be tried again."""

    @property
    def user_id(self) -> str: ...

    def within_limit(self, limit: int) -> T: ...

    def replacing(self, victim: Conversation, *, reason: str) -> T: ...


class SlotPolicy:
    def __init__(
        self,
        policy: ConcurrencyPolicy,
        conversations: ActiveConversations,
        *,
        retry_after_seconds: int = 30,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.policy = policy
        self._conversations = conversations
        self._retry_after_seconds = retry_after_seconds
        self._sleep = sleep
        self.max_attempts = max_attempts

    @classmethod
    def from_config(
        cls, config: ServiceConfig, conversations: ActiveConversations, *, sleep: Callable[[float], None] = time.sleep
    ) -> SlotPolicy:
        return cls(
            config.concurrency_policy, conversations, retry_after_seconds=config.retry_after_seconds, sleep=sleep
        )

    def claim[T](self, claim: SlotClaim[T], limit: int, *, seen_active: int | None = None) -> T:
        """Make `claim`'s conversation active under the policy. `seen_active`: the user's active
        count as last read (a create's snapshot), so a create at the limit goes straight to
        replacing instead of a write bound to fail."""
        at_limit = seen_active is not None and seen_active >= limit
        if at_limit and self.policy == ConcurrencyPolicy.REJECT:
            raise self.limit_error(limit, seen_active or 0)
        for attempt in range(self.max_attempts):
            try:
                if not at_limit:
                    return claim.within_limit(limit)
                victim = self._conversations.least_recently_active(claim.user_id)
                if victim is not None:
                    return claim.replacing(victim, reason=TOO_MANY_CONVERSATIONS)
                at_limit = False  # nobody is active any more: a slot freed meanwhile
            except ActiveLimitReached as reached:
                if self.policy == ConcurrencyPolicy.REJECT:
                    raise self.limit_error(limit, reached.current) from reached
                at_limit = True
                continue  # at the limit: replace at once, under a burst every loser tries the next oldest
            except _RACES:
                pass
            self._sleep(min(0.2, 0.005 * 2 ** min(attempt, 6)) * random.random())
        raise ConversationConflict()

    def limit_error(self, limit: int, current: int) -> ConcurrencyLimitReached:
        """The 429 of the reject policy."""
        return ConcurrencyLimitReached(
            f"You have {current} active conversations (limit {limit}); stop one or retry later",
            headers={"Retry-After": str(self._retry_after_seconds)},
            limit=limit,
            current=current,
        )
