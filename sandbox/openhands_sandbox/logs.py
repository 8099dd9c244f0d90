"""JSON-line logging to stderr, with every known secret masked before it is written."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are not masked: masking one or two characters everywhere ruins logs."""


class Redactor:
    """Replaces every occurrence of a registered secret with ``***``."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str | None]) -> None:
        wanted = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        with self._lock:
            merged = set(self._secrets) | wanted
            # Longest first, so a secret containing another one is masked whole.
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def redact_value(self, value: Any) -> Any:
        """Redact strings inside JSON-like values (dicts, lists, scalars)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self.redact_value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(item) for item in value]
        return value


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: time, level, conversation id, message, extra fields."""

    def __init__(self, conversation_id: str, redactor: Redactor) -> None:
        super().__init__()
        self._conversation_id = conversation_id
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "conversation_id": self._conversation_id,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry[f"field_{key}" if key in entry else key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(self._redactor.redact_value(entry), default=str)


def configure_logging(conversation_id: str, redactor: Redactor) -> None:
    """Send the ``openhands_sandbox`` loggers to stderr as redacted JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter(conversation_id, redactor))
    root = logging.getLogger("openhands_sandbox")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` argument carrying structured fields: ``log.info("x", extra=fields(a=1))``."""
    return {"fields": values}
