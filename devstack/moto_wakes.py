"""Wake-ups from moto, in this process: the local stack acts when AWS would, not at its next poll.

`wake_after_calls(owner, methods, event)` sets ``event`` after every call of those methods of a
moto class (an internal of the pinned moto: tests/emulated/test_local_stack_wakes.py fails if it
moves); `tell_after_calls` calls a listener with each call's arguments instead (the pool wakes
filter by table). Each method is wrapped once per process; events are added and taken out
(`stop_waking`) as local Fargates and stream pumps come and go.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Listener = Callable[[tuple[Any, ...], dict[str, Any]], None]
"""Called with a wrapped call's arguments (without ``self``) once the call has returned or raised."""

_LISTENERS: dict[tuple[type, str], list[Listener]] = {}


def tell_after_calls(owner: type, methods: tuple[str, ...], listener: Listener) -> None:
    """``listener(args, kwargs)`` after every call of those methods of ``owner``; each method is
    wrapped once per process, whoever listens."""
    for name in methods:
        listeners = _LISTENERS.get((owner, name))
        if listeners is None:
            listeners = _LISTENERS[(owner, name)] = []
            original = getattr(owner, name)

            def call_then_tell(
                self: Any, *args: Any, _original: Any = original, _listeners: list[Listener] = listeners, **kwargs: Any
            ) -> Any:
                try:
                    return _original(self, *args, **kwargs)
                finally:
                    for listener in list(_listeners):
                        listener(args, kwargs)

            setattr(owner, name, call_then_tell)
        listeners.append(listener)


@dataclass(frozen=True)
class _SetEvent:
    event: threading.Event

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.event.set()


def wake_after_calls(owner: type, methods: tuple[str, ...], event: threading.Event) -> None:
    tell_after_calls(owner, methods, _SetEvent(event))


def stop_waking(event: threading.Event) -> None:
    for listeners in _LISTENERS.values():
        with contextlib.suppress(ValueError):
            listeners.remove(_SetEvent(event))
