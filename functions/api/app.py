"""HTTP API: routes only. Rules live in conversation_service.logic; errors in http_errors."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import get_config, require_environment
from conversation_service.http_errors import refuse_unreadable_body, register_error_handlers
from conversation_service.http_routes import ServiceApiResolver
from conversation_service.logic.identity import caller_user_id
from conversation_service.logic.validation import MAX_CONVERSATION_ID_LENGTH
from conversation_service.models.api import (
    ConversationView,
    CreateConversationRequest,
    CreateConversationResponse,
    ErrorBody,
    SettingsUpdate,
    SettingsView,
)
from conversation_service.models.channel import (
    DEFAULT_EVENTS_PAGE,
    MAX_EVENTS_PAGE,
    MAX_WAIT_SECONDS,
    AgentEventPage,
    ConfirmRequest,
    SendMessageRequest,
    SendMessageResponse,
    WorkspaceSnapshot,
)
from conversation_service.models.domain import ConversationTrigger
from conversation_service.models.environment import ApiEnvironment
from conversation_service.models.lifecycle import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ConversationActionResponse,
    ConversationPage,
    QuotaView,
    UpdateConversationRequest,
)
from conversation_service.observability import logger, metrics, tracer
from conversation_service.services import agent_channel, conversation_service, lifecycle_service, settings_service

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(ApiEnvironment)

API_TITLE = "OpenHands Conversations API"
API_VERSION = "1.0.0"

app = ServiceApiResolver(enable_validation=True)
app.enable_swagger(path="/api/docs", title=API_TITLE, version=API_VERSION)
register_error_handlers(app)

_ERRORS: dict[int, Any] = {
    400: {"description": "Invalid request (see msg_id)", "content": {"application/json": {"model": ErrorBody}}},
    401: {"description": "Missing or invalid API key", "content": {"application/json": {"model": ErrorBody}}},
    404: {"description": "Not found, or not yours", "content": {"application/json": {"model": ErrorBody}}},
    422: {"description": "Body does not match the schema", "content": {"application/json": {"model": ErrorBody}}},
    500: {"description": "Unexpected failure", "content": {"application/json": {"model": ErrorBody}}},
}
_CREATE_ERRORS: dict[int, Any] = {
    **_ERRORS,
    409: {
        "description": "Idempotency-Key reused with another body",
        "content": {"application/json": {"model": ErrorBody}},
    },
    429: {"description": "Concurrency limit (reject policy)", "content": {"application/json": {"model": ErrorBody}}},
}

_START_ERRORS: dict[int, Any] = {
    **_ERRORS,
    409: {"description": "Not STOPPED or ERROR", "content": {"application/json": {"model": ErrorBody}}},
    429: {"description": "Concurrency limit (reject policy)", "content": {"application/json": {"model": ErrorBody}}},
}

# Decoded and checked by ServiceApiResolver before the route runs (400 ERROR$INVALID_CONVERSATION_ID).
ConversationId = Annotated[
    str, Path(description="32 hex characters, percent-encoded", max_length=MAX_CONVERSATION_ID_LENGTH)
]


def _ok(model: type[Any], errors: dict[int, Any]) -> dict[int, Any]:
    # Powertools documents the return type only when `responses` is not given: name it here.
    return {200: {"description": "OK", "content": {"application/json": {"model": model}}}, **errors}


def _user_id() -> str:
    return caller_user_id(app.current_event.raw_event.get("requestContext") or {}, get_config())


@app.post(
    "/api/conversations",
    summary="Create a conversation",
    responses=_ok(CreateConversationResponse, _CREATE_ERRORS),
)
def create_conversation(
    request: CreateConversationRequest,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> CreateConversationResponse:
    response = conversation_service().create(_user_id(), request, idempotency_key)
    metrics.add_metric(name="ConversationsCreated", unit="Count", value=1)
    return response


@app.get("/api/conversations/<conversation_id>", summary="Get a conversation", responses=_ok(ConversationView, _ERRORS))
def get_conversation(conversation_id: ConversationId) -> ConversationView:
    return conversation_service().view(_user_id(), conversation_id)


@app.get(
    "/api/conversations",
    summary="List your conversations, newest first",
    responses=_ok(ConversationPage, _ERRORS),
)
def search_conversations(
    page_id: Annotated[
        str | None, Query(description="next_page_id of the previous page, unchanged", max_length=4096)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    selected_repository: Annotated[str | None, Query(description="owner/repo", max_length=500)] = None,
    conversation_trigger: Annotated[ConversationTrigger | None, Query()] = None,
) -> ConversationPage:
    return lifecycle_service().search(
        _user_id(),
        page_id=page_id,
        limit=limit,
        selected_repository=selected_repository,
        conversation_trigger=conversation_trigger.value if conversation_trigger else None,
    )


@app.patch(
    "/api/conversations/<conversation_id>",
    summary="Rename a conversation (answers true)",
    responses=_ok(bool, _ERRORS),
)
def update_conversation(conversation_id: ConversationId, update: UpdateConversationRequest) -> bool:
    return lifecycle_service().rename(_user_id(), conversation_id, update.title)


@app.post(
    "/api/conversations/<conversation_id>/stop",
    summary="Stop a conversation: its sandbox stops and its slot is freed (safe to repeat)",
    responses=_ok(ConversationActionResponse, _ERRORS),
)
def stop_conversation(conversation_id: ConversationId) -> ConversationActionResponse:
    return lifecycle_service().stop(_user_id(), conversation_id)


@app.post(
    "/api/conversations/<conversation_id>/start",
    summary="Start a STOPPED or ERROR conversation again (same limit and policy as a creation)",
    responses=_ok(ConversationActionResponse, _START_ERRORS),
)
def start_conversation(conversation_id: ConversationId) -> ConversationActionResponse:
    return lifecycle_service().start(_user_id(), conversation_id)


@app.delete(
    "/api/conversations/<conversation_id>",
    summary="Delete a conversation, its sandbox and its stored context (answers true)",
    responses=_ok(bool, _ERRORS),
)
def delete_conversation(conversation_id: ConversationId) -> bool:
    return lifecycle_service().delete(_user_id(), conversation_id)


_MESSAGE_ERRORS: dict[int, Any] = {
    **_ERRORS,
    409: {
        "description": "Not STARTING or RUNNING, or Idempotency-Key reused with another body",
        "content": {"application/json": {"model": ErrorBody}},
    },
}
_CONFIRM_ERRORS: dict[int, Any] = {
    **_ERRORS,
    409: {"description": "No confirmation pending", "content": {"application/json": {"model": ErrorBody}}},
}


@app.get(
    "/api/conversations/<conversation_id>/events",
    summary="The agent's events, oldest first from page_id; wait=N answers as soon as a newer one exists",
    responses=_ok(AgentEventPage, _ERRORS),
)
def get_events(
    conversation_id: ConversationId,
    page_id: Annotated[
        str | None, Query(description="next_page_id of the previous page, unchanged", max_length=4096)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = DEFAULT_EVENTS_PAGE,
    wait: Annotated[int, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for a newer event")] = 0,
) -> AgentEventPage:
    return agent_channel().events(_user_id(), conversation_id, page_id=page_id, limit=limit, wait_seconds=wait)


@app.post(
    "/api/conversations/<conversation_id>/messages",
    summary="Send the agent a message (delivered once, in order; accepted while STARTING or RUNNING)",
    responses={
        202: {"description": "Accepted", "content": {"application/json": {"model": SendMessageResponse}}},
        **_MESSAGE_ERRORS,
    },
)
def send_message(
    conversation_id: ConversationId,
    request: SendMessageRequest,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> tuple[SendMessageResponse, int]:
    return agent_channel().send_message(_user_id(), conversation_id, request, idempotency_key), 202


@app.post(
    "/api/conversations/<conversation_id>/confirm",
    summary="Answer the confirmation the agent waits for (confirmation_mode)",
    responses={
        202: {"description": "Accepted", "content": {"application/json": {"model": SendMessageResponse}}},
        **_CONFIRM_ERRORS,
    },
)
def confirm_action(conversation_id: ConversationId, request: ConfirmRequest) -> tuple[SendMessageResponse, int]:
    return agent_channel().confirm(_user_id(), conversation_id, request), 202


@app.get(
    "/api/conversations/<conversation_id>/workspace",
    summary="What the agent changed: branch, HEAD, changed files, the unified diff (up to a cap)",
    responses=_ok(WorkspaceSnapshot, _ERRORS),
)
def get_workspace(conversation_id: ConversationId) -> WorkspaceSnapshot:
    return agent_channel().workspace(_user_id(), conversation_id)


@app.get("/api/quota", summary="Your concurrency limit and active conversations", responses=_ok(QuotaView, _ERRORS))
def get_quota() -> QuotaView:
    return lifecycle_service().quota(_user_id())


@app.get(
    "/api/settings",
    summary="Get your settings (secrets are never returned)",
    responses=_ok(SettingsView, _ERRORS),
)
def get_settings() -> SettingsView:
    return settings_service().view(_user_id())


@app.post("/api/settings", summary="Update your settings", responses=_ok(SettingsView, _ERRORS))
def update_settings(update: SettingsUpdate) -> SettingsView:
    return settings_service().update(_user_id(), update)


@app.get("/api/openapi.json", include_in_schema=False)
def openapi_document() -> dict[str, Any]:
    return openapi_schema()


def openapi_schema() -> dict[str, Any]:
    import json

    schema: dict[str, Any] = json.loads(app.get_openapi_json_schema(title=API_TITLE, version=API_VERSION))
    return schema


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if (refusal := refuse_unreadable_body(event)) is not None:
        return refusal
    agent_channel().register_lambda_context(context)
    return app.resolve(event, context)
