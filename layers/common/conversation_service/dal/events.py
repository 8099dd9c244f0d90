"""EventBridge: the stack's bus, where conversation status changes are published."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from conversation_service.dal.aws import client, error_code
from conversation_service.models.errors import EventBusMissing, EventsNotPublished

MAX_ENTRIES_PER_CALL = 10


@dataclass(frozen=True)
class OutgoingEvent:
    source: str
    detail_type: str
    detail: dict[str, Any]
    time: str | None = None  # ISO 8601


class EventPublisher:
    def __init__(self, bus_name: str) -> None:
        self._bus_name = bus_name

    @property
    def enabled(self) -> bool:
        return bool(self._bus_name)

    def publish(self, events: list[OutgoingEvent]) -> None:
        if not self._bus_name:
            return
        for start in range(0, len(events), MAX_ENTRIES_PER_CALL):
            self._put(events[start : start + MAX_ENTRIES_PER_CALL])

    def _put(self, events: list[OutgoingEvent]) -> None:
        entries: list[dict[str, Any]] = []
        for event in events:
            entry: dict[str, Any] = {
                "EventBusName": self._bus_name,
                "Source": event.source,
                "DetailType": event.detail_type,
                "Detail": json.dumps(event.detail, separators=(",", ":")),
            }
            if event.time:
                entry["Time"] = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
            entries.append(entry)
        try:
            response = client("events").put_events(Entries=entries)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                raise EventBusMissing(self._bus_name) from error
            raise
        if response.get("FailedEntryCount"):
            entries_out = response.get("Entries", [])
            codes = sorted({str(item["ErrorCode"]) for item in entries_out if item.get("ErrorCode")})
            raise EventsNotPublished(", ".join(codes) or "unknown")
