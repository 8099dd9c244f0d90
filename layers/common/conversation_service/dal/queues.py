"""SQS: the dead-letter queue of refused CreateConversation events."""

from __future__ import annotations

import json
from typing import Any

from conversation_service.dal.aws import client


class DeadLetterQueue:
    def __init__(self, queue_url: str) -> None:
        self._queue_url = queue_url

    def send(self, body: dict[str, Any], attributes: dict[str, str]) -> None:
        client("sqs").send_message(
            QueueUrl=self._queue_url,
            MessageBody=json.dumps(body, separators=(",", ":"), default=str),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value[:256]} for name, value in attributes.items() if value
            },
        )
