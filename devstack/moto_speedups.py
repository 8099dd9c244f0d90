"""Two costs of the pinned moto that grow with the local stack's age, taken out without changing
what any AWS call answers (tests/emulated/test_moto_speedups.py fails if moto moves them).

- **A transaction's backup copies the stream.** `TransactWriteItems` deep-copies every table it
  writes, to restore it if the transaction is cancelled, and a table's `StreamShard` keeps every
  record since the table was made: the copy grew with every write the stack ever made, and was
  the largest single cost of the stack's one process during a start (14 % of its CPU, py-spy, a
  warm start after 10 others). A record never changes once appended, so the shard's copy now
  shares the records and copies only the list of them: a cancelled transaction still leaves the
  table and its stream exactly as they were.
- **Every request listed moto's package directory.** The server finds a request's backend by
  host, and for each request listed every directory of moto's package (`list_of_moto_modules`,
  8 % of the process's CPU in the same profile). The list is fixed for the process: it is read
  once.

Applied once per process by `apply`, which the local stack calls before its moto server starts.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, cast

_applied = threading.Lock()
_done = False


def apply() -> None:
    global _done
    with _applied:
        if _done:
            return
        share_stream_records_in_copies()
        list_moto_modules_once()
        _done = True


def share_stream_records_in_copies() -> None:
    from moto.dynamodb.models.table import StreamShard

    def deepcopy_sharing_records(self: StreamShard, memo: dict[int, Any]) -> StreamShard:
        copied = cast(StreamShard, object.__new__(StreamShard))
        memo[id(self)] = copied
        for name, value in vars(self).items():
            setattr(copied, name, list(value) if name == "items" else copy.deepcopy(value, memo))
        return copied

    StreamShard.__deepcopy__ = deepcopy_sharing_records  # type: ignore[attr-defined]


def list_moto_modules_once() -> None:
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: iter(modules)
