"""Time, in the two forms the records use."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_since(iso_timestamp: str) -> float:
    started = datetime.fromisoformat(iso_timestamp.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(UTC) - started).total_seconds())


def now_epoch_ms() -> int:
    return time.time_ns() // 1_000_000
