"""Scheduled (every minute) and nudged after each claim: keep PoolTargetIdle idle sandboxes."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.models.environment import PoolReconcilerEnvironment
from conversation_service.observability import logger, tracer
from conversation_service.services import warm_pool

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(PoolReconcilerEnvironment)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return warm_pool().reconcile().summary()
