"""The sandbox callback API: /sandbox/v1/context and /sandbox/v1/events (docs/sandbox-protocol.md)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.http_errors import register_error_handlers
from conversation_service.http_routes import ServiceApiResolver
from conversation_service.models.context import SandboxContext, SandboxEvent
from conversation_service.models.domain import Conversation
from conversation_service.models.environment import SandboxApiEnvironment
from conversation_service.observability import logger, tracer
from conversation_service.services import sandbox_channel

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(SandboxApiEnvironment)

app = ServiceApiResolver(enable_validation=True)
register_error_handlers(app)


def _conversation() -> Conversation:
    conversation = sandbox_channel().authenticate(app.current_event.headers.get("authorization"))
    logger.append_keys(conversation_id=conversation.conversation_id)
    return conversation


@app.get("/sandbox/v1/context")
def get_context() -> SandboxContext:
    return sandbox_channel().deliver_context(_conversation())


@app.post("/sandbox/v1/events")
def post_event(event: SandboxEvent) -> dict[str, str]:
    sandbox_channel().report(_conversation(), event)
    return {"status": "ok"}


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
