"""Two things every loopback double does (the scripted model, the test suites' control plane and
git servers): serve in a thread for the length of a `with`, and let a test wait, on the server's
condition, for the first recorded item that matches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from socketserver import BaseServer


@contextmanager
def served_in_thread[Server: BaseServer](server: Server, name: str | None = None) -> Iterator[Server]:
    """`server` answering in a daemon thread (polling for shutdown every 50 ms); shut down,
    closed and joined when the `with` ends."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def first_match[Item](
    changed: threading.Condition,
    items: Sequence[Item],
    predicate: Callable[[Item], bool],
    timeout: float,
    nothing: Callable[[], str],
) -> Item:
    """The first of `items` (appended to under `changed`, which is notified) that `predicate`
    accepts, waiting up to `timeout` seconds; TimeoutError with `nothing()` after that."""
    deadline = time.monotonic() + timeout
    with changed:
        while True:
            for item in items:
                if predicate(item):
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(nothing())
            changed.wait(remaining)
