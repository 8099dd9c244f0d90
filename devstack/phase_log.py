"""A readable log of each conversation's way through the workflow, from the table's stream.

21:04:07 3f2a9c1e STARTING STATUS$QUEUED user/repo@develop
21:04:08 3f2a9c1e STARTING STATUS$INITIALIZING_CONTEXT
...
21:04:19 3f2a9c1e RUNNING STATUS$READY agent-server http://127.0.0.1:41234 (12.1 s after POST)
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from devstack.console import say, short

_deserializer = TypeDeserializer()


def _image(record: dict[str, Any], which: str) -> dict[str, Any]:
    raw = record.get("dynamodb", {}).get(which) or {}
    return {key: _deserializer.deserialize(value) for key, value in raw.items()}


def _seconds_since(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        created = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (datetime.now(UTC) - created).total_seconds()


class ConversationPhaseLog:
    """Stream observer: one line per change of (conversation_status, runtime_status)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, record: dict[str, Any]) -> None:
        if record.get("eventName") == "REMOVE":
            old = _image(record, "OldImage")
            if conversation_id := old.get("conversation_id"):
                say(f"{short(str(conversation_id))} deleted")
            return
        item = _image(record, "NewImage")
        conversation_id = str(item.get("conversation_id") or "")
        if not conversation_id:
            return
        state = (str(item.get("conversation_status", "")), str(item.get("runtime_status", "")))
        with self._lock:
            if self._last.get(conversation_id) == state:
                return
            self._last[conversation_id] = state
        say(f"{short(conversation_id)} {state[0]} {state[1]}{self._detail(record, item, state[0])}")

    @staticmethod
    def _detail(record: dict[str, Any], item: dict[str, Any], status: str) -> str:
        run = int(item.get("run") or 1)
        if record.get("eventName") == "INSERT":
            repository = item.get("repository")
            where = f" {repository}@{item.get('selected_branch')}" if repository else " (no repository)"
            return f"{where} for {item.get('user_id')}"
        old_status = _image(record, "OldImage").get("conversation_status")
        if status == "STARTING" and old_status in {"STOPPED", "ERROR"}:
            return f" (started again: run {run})"
        if status == "RUNNING":
            if run > 1:
                # The run's timeline starts with its QUEUED entry, written by the start request.
                timeline = item.get("timeline") or [{}]
                seconds, since = _seconds_since(timeline[0].get("at")), "start"
            else:
                seconds, since = _seconds_since(item.get("created_at")), "POST"
            after = f" ({seconds:.1f} s after {since})" if seconds is not None else ""
            return f" agent-server {item.get('agent_server_url')}{after}"
        if status == "ERROR":
            return f" {item.get('error_code')}: {item.get('error_message')}"
        if status in {"STOPPED", "ARCHIVED"} and item.get("status_reason"):
            return f" ({item.get('status_reason')})"
        return ""
