"""The local stack's own output: one timestamped line per event, whole lines across threads."""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

_lock = threading.RLock()


def say(message: str) -> None:
    """`HH:MM:SS message`, flushed at once (a test or `make` reads it through a pipe)."""
    line = f"{time.strftime('%H:%M:%S')} {message}"
    with _lock:
        print(line, flush=True)


def short(identifier: str) -> str:
    """The first 8 characters of a conversation or task id: enough to tell them apart."""
    return identifier[:8]


class EmbeddedMetricsDiverter(io.TextIOBase):
    """Stands in for CloudWatch: lines of embedded metric format (`{"_aws": ...}`) that the handlers
    print go to a file; every other line reaches the real stdout. Lines are assembled per thread,
    since `print` writes a line in several calls."""

    def __init__(self, stdout: TextIO, metrics_file: TextIO) -> None:
        self._stdout = stdout
        self._metrics = metrics_file
        self._pending = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        pending: str = getattr(self._pending, "text", "") + text
        *lines, rest = pending.split("\n")
        self._pending.text = rest
        for line in lines:
            target = self._metrics if line.startswith('{"_aws":') else self._stdout
            with _lock:
                target.write(line + "\n")
                target.flush()
        return len(text)

    def flush(self) -> None:
        self._stdout.flush()
        self._metrics.flush()

    def fileno(self) -> int:
        return self._stdout.fileno()


def divert_embedded_metrics(metrics_path: Path) -> None:
    """From now on, handler metrics printed on stdout go to `metrics_path`."""
    if isinstance(sys.stdout, EmbeddedMetricsDiverter):
        return
    sys.stdout = EmbeddedMetricsDiverter(sys.stdout, metrics_path.open("a", buffering=1))
