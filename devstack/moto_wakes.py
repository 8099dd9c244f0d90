"""Wake-ups from moto, in this process: the local stack acts when AWS would, not at its next poll.

`wake_after_calls(owner, methods, event)` sets ``event`` after every call of those methods of a
moto class (an internal of the pinned moto: tests/emulated/test_local_stack_wakes.py fails if it
moves). Each class is wrapped once per process; events are added and taken out (`stop_waking`)
as local Fargates and stream pumps come and go.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

_LISTENERS: dict[type, list[threading.Event]] = {}


def wake_after_calls(owner: type, methods: tuple[str, ...], event: threading.Event) -> None:
    listeners = _LISTENERS.get(owner)
    if listeners is None:
        listeners = _LISTENERS[owner] = []
        for name in methods:
            original = getattr(owner, name)

            def call_then_wake(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                try:
                    return _original(*args, **kwargs)
                finally:
                    for listener in list(listeners):
                        listener.set()

            setattr(owner, name, call_then_wake)
    listeners.append(event)


def stop_waking(event: threading.Event) -> None:
    for listeners in _LISTENERS.values():
        with contextlib.suppress(ValueError):
            listeners.remove(event)
