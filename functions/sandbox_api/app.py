"""The sandbox callback API (docs/sandbox-protocol.md): the start (/sandbox/v1/context, /sandbox/v1/events)
and the channel to the running conversation (agent events and status, inbox, workspace)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.http_errors import refuse_unreadable_body, register_error_handlers
from conversation_service.http_routes import ServiceApiResolver
from conversation_service.models.channel import (
    MAX_WAIT_SECONDS,
    AgentConversationInfo,
    AgentEventBatch,
    AgentEventsStored,
    InboxPage,
    WorkspaceSnapshot,
)
from conversation_service.models.context import (
    MAX_SANDBOX_REPORT_BYTES,
    MAX_SANDBOX_REPORT_DEPTH,
    SandboxContext,
    SandboxEvent,
)
from conversation_service.models.domain import Conversation
from conversation_service.models.environment import SandboxApiEnvironment
from conversation_service.observability import logger, tracer
from conversation_service.services import sandbox_agent_channel, sandbox_channel

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


# -- the channel to the running conversation (logic/agent_channel.py) ------------------------------
@app.post("/sandbox/v1/agent-events")
def post_agent_events(batch: AgentEventBatch) -> AgentEventsStored:
    return sandbox_agent_channel().store_events(_conversation(), batch)


@app.post("/sandbox/v1/agent-conversation")
def post_agent_conversation(info: AgentConversationInfo) -> dict[str, str]:
    sandbox_agent_channel().record_agent_status(_conversation(), info)
    return {"status": "ok"}


@app.get("/sandbox/v1/inbox")
def get_inbox(wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 0) -> InboxPage:
    return sandbox_agent_channel().inbox(_conversation(), wait)


@app.post("/sandbox/v1/inbox/<item_id>/ack")
def acknowledge_inbox_item(item_id: str) -> dict[str, str]:
    sandbox_agent_channel().acknowledge(_conversation(), item_id)
    return {"status": "ok"}


@app.post("/sandbox/v1/workspace")
def post_workspace(snapshot: WorkspaceSnapshot) -> dict[str, str]:
    sandbox_agent_channel().publish_workspace(_conversation(), snapshot)
    return {"status": "ok"}


# The context answer holds the LLM key, the git token, MCP keys and the session key: X-Ray
# must not record responses or errors of this function (docs/sandbox-protocol.md).
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Every body is measured before it is parsed; status reports are small, so theirs tightly.
    if event.get("path") == "/sandbox/v1/events":
        refused = refuse_unreadable_body(event, max_bytes=MAX_SANDBOX_REPORT_BYTES, max_depth=MAX_SANDBOX_REPORT_DEPTH)
    else:
        refused = refuse_unreadable_body(event)
    return refused or app.resolve(event, context)
