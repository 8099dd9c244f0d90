"""Conversations created from events: `CreateConversation` on the stack's bus -> rule -> SQS ->
EventIntakeFunction (docs/events.md).

The rule lets only the template's trusted sources through; the source is checked again here, so
a message put on the queue some other way creates nothing. The conversation is created by
`ConversationService.create`, for the user the event names, with the same validation, settings
checks, repository checks, concurrency limit and policy as `POST /api/conversations`, and
idempotently: the event's `idempotency_key`, else its EventBridge id, is the Idempotency-Key.

The bus itself refuses CreateConversation from principals the operator did not list (its
resource policy, template parameter CreateConversationPrincipals); and a conversation is created
for a user only from a source that user authorised (`authorized_event_sources` in their
settings), so one integration cannot act for users who never connected it.

A business refusal (malformed event, untrusted or unauthorised source, invalid request, settings
missing, limit reached under the reject policy, repository refused...) is final: the message goes
to the dead-letter queue with the reason, and is not retried. A transient failure (throttling, a
5xx, the same key still in progress) raises, so SQS delivers the message again; from delivery
FINAL_ATTEMPT on it is dead-lettered too ("EVENT$RETRIES_EXHAUSTED"). The copy in the dead-letter
queue never carries a secret: MCP servers and anything named like a key, token or password are
replaced by "[redacted]", and a body that is not JSON is not copied at all. The queue's own
redrive (maxReceiveCount above FINAL_ATTEMPT) is left only for deliveries that crash the function.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from conversation_service.logic.clock import now_iso
from conversation_service.logic.conversations import ConversationService
from conversation_service.models.aws_events import QueuedEvent
from conversation_service.models.errors import EventRefused, ServiceError
from conversation_service.models.events import CREATE_CONVERSATION, CreateConversationDetail
from conversation_service.observability import logger, record_rejection
from conversation_service.ports import DeadLetterQueue

# From this delivery of a message on, a transient failure is final too (the queue's redrive
# policy moves a message only after more deliveries than this: template.yaml).
FINAL_ATTEMPT = 5
REDACTED = "[redacted]"
# Keys whose values may be secret wherever they appear in an event (mcp_config holds MCP servers'
# keys and environments; the rest are names integrations give to credentials).
_SECRET_KEY_PARTS = ("mcp_config", "key", "token", "secret", "password", "authorization", "credential", "env")
_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")  # https://user:token@host/...


@dataclass(frozen=True)
class IntakeResult:
    conversation_id: str | None = None
    refused: str | None = None  # msg_id of the refusal, when it went to the dead-letter queue


class EventIntake:
    def __init__(self, service: ConversationService, trusted_sources: list[str], dead_letters: DeadLetterQueue) -> None:
        self._service = service
        self._trusted = frozenset(trusted_sources)
        self._dead_letters = dead_letters

    def handle(self, body: str, message_id: str, receive_count: int = 1) -> IntakeResult:
        """Create the conversation one SQS message asks for; refusals go to the dead-letter queue."""
        try:
            envelope = _envelope(body)
            source, event_id = envelope.source, envelope.id or message_id
            logger.append_keys(event_source=source, event_id=event_id)
            detail = self._accept(envelope)
            try:
                response = self._create(detail, event_id, source)
            except Exception as error:
                if receive_count < FINAL_ATTEMPT:
                    raise
                raise EventRefused(
                    "EVENT$RETRIES_EXHAUSTED",
                    f"Failed {receive_count} times ({type(error).__name__}); send the event again",
                ) from error
        except EventRefused as refused:
            self._dead_letter(body, message_id, refused)
            return IntakeResult(refused=refused.msg_id)
        logger.info("conversation created from event", extra={"conversation_id": response})
        return IntakeResult(conversation_id=response)

    def _accept(self, envelope: QueuedEvent) -> CreateConversationDetail:
        if envelope.source not in self._trusted:
            raise EventRefused(
                "EVENT$UNTRUSTED_SOURCE", f"Source {envelope.source[:100]!r} is not a trusted event source"
            )
        if envelope.detail_type != CREATE_CONVERSATION:
            raise EventRefused("EVENT$UNKNOWN_DETAIL_TYPE", f"Only {CREATE_CONVERSATION} events are accepted")
        try:
            return CreateConversationDetail.model_validate(envelope.detail)
        except ValidationError as invalid:
            problems = _problems(invalid)
            message = f"Invalid event detail: {_first(problems, 'detail')}"
            raise EventRefused("ERROR$VALIDATION", message, problems) from None

    def _create(self, detail: CreateConversationDetail, event_id: str, source: str) -> str:
        key = detail.idempotency_key or f"event:{event_id}"
        try:
            response = self._service.create(detail.user_id, detail.request, key, event_source=source)
        except ServiceError as error:
            if error.status_code >= 500:
                raise  # transient: SQS retries, then redrives to the dead-letter queue
            raise EventRefused(error.msg_id, error.message, [error.extra] if error.extra else None) from error
        return response.conversation_id

    def _dead_letter(self, body: str, message_id: str, refused: EventRefused) -> None:
        record_rejection(refused.msg_id)
        logger.info("event refused", extra={"msg_id": refused.msg_id})
        try:
            event: Any = redacted(json.loads(body))
        except (json.JSONDecodeError, RecursionError):
            event = {"unparsed_body_length": len(body)}  # it may hold anything: not copied
        self._dead_letters.send(
            {
                "reason": {"msg_id": refused.msg_id, "message": refused.message, "detail": refused.detail},
                "message_id": message_id,
                "refused_at": now_iso(),
                "event": event,
            },
            {"msg_id": refused.msg_id},
        )


def redacted(value: Any) -> Any:
    """`value` with every value under a key that may name a secret replaced by REDACTED."""
    if isinstance(value, dict):
        return {
            key: REDACTED if any(part in str(key).lower() for part in _SECRET_KEY_PARTS) else redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redacted(item) for item in value]
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(r"\1" + REDACTED + "@", value)
    return value


def _envelope(body: str) -> QueuedEvent:
    try:
        return QueuedEvent.model_validate_json(body)
    except ValidationError as invalid:
        detail = _problems(invalid)
        if any(problem["type"] == "json_invalid" for problem in detail):
            raise EventRefused("EVENT$MALFORMED", "The message is not an EventBridge event (not JSON)") from None
        raise EventRefused(
            "EVENT$MALFORMED", f"The message is not an EventBridge event: {_first(detail, 'event')}", detail
        ) from None
    except RecursionError:
        raise EventRefused("EVENT$MALFORMED", "The message is not an EventBridge event (nested too deep)") from None


def _problems(invalid: ValidationError) -> list[dict[str, Any]]:
    """Where and what only: the input may hold a secret (an MCP server's key)."""
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
        for error in invalid.errors(include_url=False, include_input=False)
    ]


def _first(problems: list[dict[str, Any]], whole: str) -> str:
    first = problems[0] if problems else {"loc": [], "msg": "invalid"}
    return f"{'.'.join(str(part) for part in first['loc']) or whole}: {first['msg']}"
