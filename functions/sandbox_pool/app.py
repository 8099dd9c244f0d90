"""The idle pool sandbox's door: /sandbox/v1/pool/idle and /sandbox/v1/pool/assignment (a long
poll). A pool credential opens these two for its own sandbox and nothing else."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.http_errors import register_error_handlers
from conversation_service.models.environment import SandboxPoolEnvironment
from conversation_service.models.errors import InvalidRequest
from conversation_service.models.pool import Assignment, PoolIdleReport, PoolSandbox
from conversation_service.observability import logger, tracer
from conversation_service.services import pool_channel

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(SandboxPoolEnvironment)

app = APIGatewayRestResolver(enable_validation=True)
register_error_handlers(app)


def _sandbox() -> PoolSandbox:
    sandbox = pool_channel().authenticate(app.current_event.headers.get("authorization"))
    logger.append_keys(pool_sandbox_id=sandbox.sandbox_id)
    return sandbox


@app.post("/sandbox/v1/pool/idle")
def post_idle(report: PoolIdleReport) -> dict[str, str]:
    sandbox = _sandbox()
    pool_channel().report_idle(sandbox)
    logger.info("pool sandbox idle", extra={"boot_seconds": report.boot_seconds})
    return {"status": "ok"}


@app.get("/sandbox/v1/pool/assignment")
def get_assignment() -> Assignment:
    raw_wait = app.current_event.get_query_string_value("wait", "0") or "0"
    try:
        wait = float(raw_wait)
    except ValueError:
        raise InvalidRequest("wait must be a number of seconds") from None
    assignment = pool_channel().wait_for_assignment(_sandbox(), wait)
    if assignment is not None:
        logger.info("pool sandbox assigned", extra={"conversation_id": assignment.get("CONVERSATION_ID")})
    return Assignment(assignment=assignment)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
