"""The conversations table, one store assembled from its concerns (one module each):

- `conversation_records`: the item format, its key, a single read, the title;
- `conversation_progress`: phases and fields while it starts and runs (conditional on its run);
- `active_slots`: every write that makes a conversation active or closes it, with the user's
  active counter in the same transaction (the slot policy that picks one is `logic/slot_policy.py`);
- `conversation_queries`: listings, the least recently active, the creation snapshot;
- `conversation_teardown`: deleting, and asking the stream consumer to check again.

Logic sees them as one `ConversationStore` (its port: `ports.py`).
"""

from __future__ import annotations

from conversation_service.dal.conversation_progress import ConversationProgress
from conversation_service.dal.conversation_queries import SNAPSHOT_READ_ATTEMPTS, ConversationQueries
from conversation_service.dal.conversation_teardown import ConversationTeardown

__all__ = ["SNAPSHOT_READ_ATTEMPTS", "ConversationStore"]


class ConversationStore(ConversationQueries, ConversationProgress, ConversationTeardown):
    """Every read and write of conversations (the table and its indexes)."""
