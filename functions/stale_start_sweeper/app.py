"""Scheduled: close conversations stuck STARTING with no workflow left to end them."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.models.environment import StaleStartSweeperEnvironment
from conversation_service.observability import logger, tracer
from conversation_service.services import stale_start_sweeper

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(StaleStartSweeperEnvironment)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    closed = stale_start_sweeper().sweep()
    return {"closed": closed}
