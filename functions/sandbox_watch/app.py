"""EventBridge "ECS Task State Change" (STOPPED) for sandbox tasks -> close the conversation."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.logic.validation import validate_conversation_id
from conversation_service.models.aws_events import EcsTaskStateChange
from conversation_service.models.environment import SandboxWatchEnvironment
from conversation_service.models.errors import InvalidConversationId
from conversation_service.models.pool import POOL_SANDBOX_PREFIX
from conversation_service.observability import logger, tracer
from conversation_service.services import sandbox_watch, warm_pool

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(SandboxWatchEnvironment)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    task = parse(event=event, model=EcsTaskStateChange).detail  # not a task state change: fails, named
    conversation_id = task.startedBy or ""
    if conversation_id.startswith(POOL_SANDBOX_PREFIX):
        # A pool task: an unclaimed one is replaced; a claimed one is its conversation's sandbox.
        logger.append_keys(pool_sandbox_id=conversation_id)
        claimed_by = warm_pool().task_stopped(conversation_id, task.taskArn, task.stoppedReason)
        if claimed_by is None:
            return {"outcome": "pool-sandbox-ended"}
        conversation_id = claimed_by
    try:
        validate_conversation_id(conversation_id)
    except InvalidConversationId:
        return {"outcome": "ignored"}
    logger.append_keys(conversation_id=conversation_id)
    outcome = sandbox_watch().task_stopped(conversation_id, task.taskArn, task.stoppedReason, task.exit_code)
    logger.info("sandbox task stopped", extra={"outcome": outcome, "stop_code": task.stopCode})
    return {"outcome": outcome}
