"""The conversations table's stream consumer (logic/conversation_stream.py): for each change, in
order, start the run's workflow (a new or restarted STARTING conversation; execution `<id>`,
then `<id>-<run>`, so a redelivered record starts nothing twice), tear down what a stopped,
failed or deleted conversation left running, and publish ConversationStatusChanged.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.logic.conversation_stream import StreamChange
from conversation_service.models.environment import ConversationStreamEnvironment
from conversation_service.observability import logger, tracer
from conversation_service.services import conversation_stream_consumer

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(ConversationStreamEnvironment)

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def handle_change(record: DynamoDBRecord) -> None:
    raw = record.raw_event.get("dynamodb") or {}
    if record.event_name is None:
        return
    change = StreamChange.from_record(
        record.event_name.name,
        str(record.event_id or raw.get("SequenceNumber", "")),
        raw.get("OldImage"),
        raw.get("NewImage"),
        raw.get("ApproximateCreationDateTime"),
    )
    conversation_stream_consumer().handle(change)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=handle_change, processor=processor, context=context)
    )
