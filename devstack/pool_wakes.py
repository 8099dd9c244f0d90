"""An idle pool sandbox's assignment, delivered when moto stores it, not at the long poll's next read.

On AWS the long poll (`PoolChannel.wait_for_assignment`) reads its item every
`POOL_ASSIGNMENT_POLL_SECONDS` (0.1 s): DynamoDB tells no reader of a write. In the local stack
every idle sandbox's poll was a GetItem ten times a second in the stack's one process (17 of its
30 AWS calls a second with two idle sandboxes, measured), taking CPU from the starts beside it, and
an assignment waited 0.05 s on average for the next read. Here `PoolStore.wait_for_change` returns
as soon as moto writes to the pool table (any item: the poll then reads its own), and the local
stack reads at least every `LOCAL_POLL_SECONDS` besides.

`wake_on_pool_writes(table_name)` wraps moto's DynamoDB write methods (internals of the pinned
moto: tests/emulated/test_local_stack_wakes.py fails if they move) and the DAL's wait, once per
process.
"""

from __future__ import annotations

import threading
from typing import Any

from devstack.moto_wakes import tell_after_calls

LOCAL_POLL_SECONDS = 0.5
"""The local stack's POOL_ASSIGNMENT_POLL_SECONDS: a read when no write woke the poll. A write
between a poll's read and its wait is seen at the next read, this long after at most."""

_changed = threading.Condition()
_writes = 0
_pool_tables: set[str] = set()
_installed = False


def wake_on_pool_writes(table_name: str) -> None:
    global _installed
    with _changed:
        _pool_tables.add(table_name)
        if _installed:
            return
        _installed = True
    from conversation_service.dal.pool import PoolStore
    from moto.dynamodb.models import DynamoDBBackend

    tell_after_calls(DynamoDBBackend, ("put_item", "update_item", "delete_item"), _after_item_write)
    tell_after_calls(DynamoDBBackend, ("transact_write_items",), _after_transaction)
    PoolStore.wait_for_change = _wait_for_a_pool_write  # type: ignore[method-assign,assignment]


def pool_writes() -> int:
    """How many writes to a pool table moto has made (for tests)."""
    with _changed:
        return _writes


def _after_item_write(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if kwargs.get("table_name", args[0] if args else None) in _pool_tables:
        _notify()


def _after_transaction(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    items = kwargs.get("transact_items", args[0] if args else [])
    written = {op.get("TableName") for item in items for op in item.values() if isinstance(op, dict)}
    if written & _pool_tables:
        _notify()


def _notify() -> None:
    global _writes
    with _changed:
        _writes += 1
        _changed.notify_all()


def _wait_for_a_pool_write(_store: Any, _sandbox_id: str, seconds: float) -> None:
    with _changed:
        seen = _writes
        _changed.wait_for(lambda: _writes != seen, timeout=seconds)
