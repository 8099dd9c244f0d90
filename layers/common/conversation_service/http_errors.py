"""The one place where errors become HTTP answers, in the spec's body shape:
`{"status": "error", "message": ..., "msg_id": ...}` (plus `detail`, `limit`, ... where useful).
"""

from __future__ import annotations

import base64
import binascii
import json
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from conversation_service.http_routes import decode_path_parameters
from conversation_service.json_limits import MAX_JSON_DEPTH, MAX_REQUEST_BODY_BYTES, nesting_depth
from conversation_service.models.errors import InvalidConversationId, ServiceError
from conversation_service.observability import logger, metrics, record_rejection

CONVERSATION_PATH_PREFIX = "/api/conversations/"


def error_response(
    status_code: int, message: str, msg_id: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response[str]:
    body = {"status": "error", "message": message, "msg_id": msg_id, **extra}
    return Response(
        status_code=status_code,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body),
        headers=headers or {},
    )


def refuse_unreadable_body(
    event: dict[str, Any], *, max_bytes: int = MAX_REQUEST_BODY_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> dict[str, Any] | None:
    """The proxy answer for a body too large or too deeply nested to parse (None: read it).

    Called by the handlers before the resolver parses anything (json.loads would raise
    RecursionError on a deep body, which no route expects). A route whose bodies are small
    (the sandbox's status reports) passes tighter limits."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=False).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            body = ""
    if len(body) > max_bytes or len(body.encode()) > max_bytes:
        status, msg_id = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "ERROR$REQUEST_TOO_LARGE"
        message = f"The request body is larger than {max_bytes} bytes"
    elif nesting_depth(body, stop_above=max_depth) > max_depth:
        status, msg_id = HTTPStatus.BAD_REQUEST, "ERROR$JSON_TOO_DEEP"
        message = f"The request body nests arrays or objects deeper than {max_depth} levels"
    else:
        return None
    record_rejection(msg_id)
    logger.info("request body refused", extra={"msg_id": msg_id, "body_length": len(body)})
    return {
        "statusCode": int(status),
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps({"status": "error", "message": message, "msg_id": msg_id}),
        "isBase64Encoded": False,
    }


def _validation_detail(errors: Any) -> list[dict[str, Any]]:
    # Only where and what: `input` may hold a secret (an API key in a settings body).
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
        for error in errors
    ]


def _summary(detail: list[dict[str, Any]]) -> str:
    first = detail[0] if detail else {"loc": [], "msg": "invalid"}
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
    return f"Invalid request: {where}: {first['msg']}{more}"


def register_error_handlers(app: APIGatewayRestResolver) -> None:
    @app.exception_handler(ServiceError)
    def handle_service_error(error: ServiceError) -> Response[str]:
        record_rejection(error.msg_id)
        logger.info("request refused", extra={"msg_id": error.msg_id, "status_code": error.status_code})
        return error_response(error.status_code, error.message, error.msg_id, error.headers, **error.extra)

    @app.exception_handler(RequestValidationError)
    def handle_validation_error(error: RequestValidationError) -> Response[str]:
        detail = _validation_detail(error.errors())
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, _summary(detail), "ERROR$VALIDATION", detail=detail)

    @app.not_found
    def handle_not_found(_: Exception) -> Response[str]:
        # A path no route matches may still start with a conversation id: the id's rule answers
        # first, as on the routes (`/api/conversations/a%01b/unknown` is 400, not 404).
        path = app.current_event.path or ""
        if path.startswith(CONVERSATION_PATH_PREFIX):
            first_segment = path[len(CONVERSATION_PATH_PREFIX) :].split("/", 1)[0]
            try:
                decode_path_parameters({"conversation_id": first_segment})
            except InvalidConversationId as invalid:
                return error_response(400, invalid.message, invalid.msg_id)
        return error_response(404, "Not found", "ERROR$NOT_FOUND")

    @app.exception_handler(Exception)
    def handle_unexpected(error: Exception) -> Response[str]:
        logger.exception("unexpected error", extra={"error_type": type(error).__name__})
        metrics.add_metric(name="UnexpectedErrors", unit="Count", value=1)
        creating = app.current_event.http_method == "POST" and app.current_event.path == "/api/conversations"
        message = "Failed to start conversation" if creating else "Internal server error"
        return error_response(500, message, "STATUS$ERROR")
