"""The conversations table's stream consumer (logic/conversation_stream.py): for each change, in
order, start the run's workflow (a new or restarted STARTING conversation; execution `<id>`,
then `<id>-<run>`, so a redelivered record starts nothing twice), tear down what a stopped,
failed or deleted conversation left running, and publish ConversationStatusChanged.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.logic.conversation_stream import StreamChange
from conversation_service.models.aws_events import ConversationStreamRecord
from conversation_service.models.environment import ConversationStreamEnvironment
from conversation_service.observability import logger, tracer
from conversation_service.services import conversation_stream_consumer

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(ConversationStreamEnvironment)

# Each record is parsed as a ConversationStreamRecord; one that does not fit fails alone (a
# batch item failure), so the mapping retries it and at last hands it to its on-failure queue.
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, model=ConversationStreamRecord)


def handle_change(record: ConversationStreamRecord) -> None:
    conversation_stream_consumer().handle(StreamChange.from_record(record))


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=handle_change, processor=processor, context=context)
    )
