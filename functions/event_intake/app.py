"""CreateConversation events (bus rule -> SQS -> here) create conversations for the user they
name, through the same rules as POST /api/conversations (logic/event_intake.py).

Refusals go to the dead-letter queue with their reason; a transient failure is reported as the
message's failure, so SQS delivers it again (and its redrive policy ends in the same queue).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.models.aws_events import CreateConversationMessage
from conversation_service.models.environment import EventIntakeEnvironment
from conversation_service.observability import logger, tracer
from conversation_service.services import event_intake

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(EventIntakeEnvironment)

# Each record is parsed as a CreateConversationMessage; its body (the event) is EventIntake's to
# judge, so a malformed event is dead-lettered with the reason rather than redelivered.
processor = BatchProcessor(event_type=EventType.SQS, model=CreateConversationMessage)


def handle_message(record: CreateConversationMessage) -> None:
    receive_count = int(record.attributes.ApproximateReceiveCount)
    event_intake().handle(record.body, record.messageId, receive_count)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=handle_message, processor=processor, context=context)
    )
