"""DynamoDB stream -> Step Functions: each new STARTING conversation gets its workflow.

The execution is named by the conversation id, so a redelivered record starts nothing twice.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.observability import logger, tracer
from conversation_service.services import creation_workflow

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def start_workflow(record: DynamoDBRecord) -> None:
    image = record.dynamodb.new_image if record.dynamodb else None
    if record.event_name is None or record.event_name.name != "INSERT" or not image:
        return
    if image.get("conversation_status") != "STARTING":
        return
    conversation_id = str(image["conversation_id"])
    logger.append_keys(conversation_id=conversation_id)
    creation_workflow().start_for(conversation_id, str(image["user_id"]))


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=start_workflow, processor=processor, context=context)
    )
