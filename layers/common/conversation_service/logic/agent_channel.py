"""The channel to a running conversation (docs/sandbox-protocol.md, docs/architecture.md).

The sandbox only ever calls out: it posts the agent-server's events, its execution status and
its workspace, and long-polls an inbox of the owner's messages and confirmation answers, which
it acknowledges one by one. The owner reads the transcript, sends messages and answers through
the API. Both sides meet in the channel table (dal/channel.py).

- Events are redacted (every secret the sandbox was given, in the forms a transcript shows it)
  before they are written anywhere, stored in order, once per event id, within the caps.
- An inbox item stays pending until the sandbox acknowledges it: a lost poll answer or a
  restarted sandbox finds it again, and an acknowledged item is never answered again.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conversation_service.config import ServiceConfig
from conversation_service.dal.channel import PreparedEvent
from conversation_service.logic.clock import now_epoch_ms, now_iso
from conversation_service.logic.idempotency import check_idempotency_key, make_idempotent, run_once
from conversation_service.logic.mcp import sealed_mcp_config_of
from conversation_service.logic.redaction import SecretRedactor, mcp_secret_values
from conversation_service.models.channel import (
    DEFAULT_EVENTS_PAGE,
    MAX_EVENTS_PAGE,
    MAX_WAIT_SECONDS,
    AgentConversationInfo,
    AgentEventBatch,
    AgentEventEnvelope,
    AgentEventPage,
    AgentEventsStored,
    AgentStatus,
    ConfirmRequest,
    InboxItem,
    InboxPage,
    RefusedEvent,
    SendMessageRequest,
    SendMessageResponse,
    WorkspaceSnapshot,
)
from conversation_service.models.context import AgentContext
from conversation_service.models.domain import ACTIVE_STATUSES, Conversation
from conversation_service.models.errors import (
    ChannelContention,
    ConversationConflict,
    ConversationEventLimitReached,
    ConversationNotAcceptingMessages,
    ConversationNotFound,
    InboxRefused,
    InvalidPageToken,
    InvalidRequest,
    NoConfirmationPending,
    SandboxTokenExpired,
    WorkspaceNotPublished,
)
from conversation_service.observability import logger
from conversation_service.ports import ChannelStore, ContextStore, ConversationStore, UserStore

if TYPE_CHECKING:  # Powertools idempotency is loaded only by a channel built with a store (the API's)
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

EVENT_TOO_LARGE = "EVENT_TOO_LARGE"
MAX_EVENT_ID_LENGTH = 200
# An inbox item is one DynamoDB item (400 KB at most): text and image URLs together stay below.
MAX_MESSAGE_BYTES = 300 * 1024
REDACTOR_TTL_SECONDS = 300.0
_ITEM_ID = re.compile(r"^[0-9]{1,10}$")
_PAGE_ID = re.compile(r"^[0-9]{1,12}$")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class AgentChannel:
    def __init__(
        self,
        config: ServiceConfig,
        conversations: ConversationStore,
        users: UserStore,
        context: ContextStore,
        channel: ChannelStore,
        idempotency_store: Callable[[], BasePersistenceLayer] | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._conversations = conversations
        self._users = users
        self._context = context
        self._channel = channel
        self._sleep = sleep
        self._clock = clock
        self._redactors: dict[tuple[str, int, str | None], tuple[float, SecretRedactor]] = {}
        # The store and the keyed send are built on the first keyed message: a process that sends
        # none (most API calls, every sandbox call) never imports Powertools idempotency.
        self._idempotency_store = idempotency_store
        self._idempotency_config: IdempotencyConfig | None = None
        self._send_once: Callable[..., SendMessageResponse] | None = None
        self._lambda_context: Any = None

    def register_lambda_context(self, context: Any) -> None:
        self._lambda_context = context
        if self._idempotency_config is not None:
            self._idempotency_config.register_lambda_context(context)

    # == the sandbox's side ========================================================================
    @staticmethod
    def require_active(conversation: Conversation) -> None:
        """The sandbox token opens the channel while its conversation is STARTING or RUNNING."""
        if conversation.conversation_status not in ACTIVE_STATUSES:
            raise SandboxTokenExpired()

    def store_events(self, conversation: Conversation, batch: AgentEventBatch) -> AgentEventsStored:
        self.require_active(conversation)
        redactor = self.redactor_for(conversation)
        prepared: dict[str, PreparedEvent] = {}
        refused: list[RefusedEvent] = []
        for raw in batch.events:
            event_id = raw.get("id")
            if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_LENGTH:
                raise InvalidRequest(f"Every event needs an id (a string of 1 to {MAX_EVENT_ID_LENGTH} characters)")
            if event_id in prepared:
                continue
            redacted = redactor.redact(raw)
            body: str | None = _dumps(redacted)
            size = len(body.encode()) if body else 0
            error = None
            if size > self._config.max_event_bytes:
                refused.append(RefusedEvent(id=event_id, error_code=EVENT_TOO_LARGE))
                body, error = None, EVENT_TOO_LARGE
                logger.warning("agent event over the cap", extra={"event_bytes": size, "kind": raw.get("kind")})
                size = 0
            prepared[event_id] = PreparedEvent(
                event_id=event_id,
                timestamp=str(redacted.get("timestamp") or now_iso())[:64],
                source=str(redacted.get("source") or "unknown")[:64],
                kind=str(redacted.get("kind") or "unknown")[:200],
                body=body,
                size=size,
                error_code=error,
            )
        ordered = sorted(prepared.values(), key=lambda event: event.timestamp)  # stable: then arrival
        try:
            result = self._channel.append_events(
                conversation.conversation_id,
                ordered,
                max_events=self._config.max_events_per_conversation,
                max_bytes=self._config.max_event_bytes_per_conversation,
            )
        except ChannelContention as contention:
            raise ConversationConflict() from contention  # 503: the relay retries the batch
        if result.limit_reached:
            raise ConversationEventLimitReached(stored=result.stored, duplicates=result.duplicates)
        return AgentEventsStored(stored=result.stored, duplicates=result.duplicates, refused=refused)

    def record_agent_status(self, conversation: Conversation, info: AgentConversationInfo) -> None:
        self.require_active(conversation)
        status = info.execution_status.value
        waiting = AgentStatus.WAITING_FOR_CONFIRMATION.value
        # An answer stays recorded while the agent still waits on the same confirmation.
        answer_stays = status == waiting and conversation.agent_status == waiting
        if not self._conversations.set_agent_status(
            conversation.conversation_id, conversation.run, status, at=now_iso(), answer_stays=answer_stays
        ):
            raise SandboxTokenExpired()

    def inbox(self, conversation: Conversation, wait_seconds: float) -> InboxPage:
        self.require_active(conversation)
        pending = self._poll(lambda: self._channel.pending_inbox(conversation.conversation_id), wait_seconds)
        return InboxPage(items=[_inbox_item(item) for item in pending])

    def acknowledge(self, conversation: Conversation, item_id: str) -> None:
        self.require_active(conversation)
        if not _ITEM_ID.match(item_id):
            raise InvalidRequest("item_id is the item_id of an inbox item, unchanged")
        self._channel.acknowledge(conversation.conversation_id, int(item_id))

    def publish_workspace(self, conversation: Conversation, snapshot: WorkspaceSnapshot) -> None:
        self.require_active(conversation)
        diff, truncated = snapshot.diff, snapshot.diff_truncated
        cap = self._config.max_workspace_diff_bytes
        if len(diff.encode()) > cap:
            diff, truncated = diff.encode()[:cap].decode(errors="ignore"), True
        published = snapshot.model_copy(update={"diff": diff, "diff_truncated": truncated, "published_at": now_iso()})
        redacted = self.redactor_for(conversation).redact(published.model_dump(mode="json"))
        self._channel.put_workspace(conversation.conversation_id, redacted)

    def redactor_for(self, conversation: Conversation) -> SecretRedactor:
        """Every secret this conversation's sandbox was given, opened once per few minutes per process."""
        key = (conversation.conversation_id, conversation.run, conversation.context_key)
        cached = self._redactors.get(key)
        if cached and cached[0] > self._clock():
            return cached[1]
        secrets: list[str] = []
        settings = self._users.get_settings(conversation.user_id)
        if settings is not None:
            user_secrets = self._users.open_secrets(settings)
            secrets += [user_secrets.llm_api_key or "", *user_secrets.provider_tokens.values()]
            secrets += mcp_secret_values(settings.mcp_config or {})

        # Sealed for this conversation (its id in the encryption context).
        def opened(sealed: str) -> dict[str, Any]:
            return self._users.open_for(conversation.user_id, sealed, conversation_id=conversation.conversation_id)

        if conversation.sealed_session_api_key:
            secrets.append(str(opened(conversation.sealed_session_api_key).get("session_api_key") or ""))
        if sealed_mcp := sealed_mcp_config_of(self._context, conversation):  # on the item or in S3
            secrets += mcp_secret_values(opened(sealed_mcp))
        if conversation.context_key:
            agent_context = AgentContext.model_validate(self._context.get_json(conversation.context_key))
            if agent_context.sealed_mcp_config:
                secrets += mcp_secret_values(opened(agent_context.sealed_mcp_config))
        secrets += mcp_secret_values(self._config.default_mcp_config)
        # The sandbox token itself (`<id>.<secret>`): the agent-server never holds it, but if it leaks.
        token = re.escape(conversation.conversation_id) + r"\.[A-Za-z0-9_\-]{16,}"
        redactor = SecretRedactor(secrets, patterns=[token])
        self._redactors = {k: v for k, v in self._redactors.items() if v[0] > self._clock()}
        self._redactors[key] = (self._clock() + REDACTOR_TTL_SECONDS, redactor)
        return redactor

    # == the owner's side ==========================================================================
    def _owned(self, user_id: str, conversation_id: str) -> Conversation:
        # conversation_id is decoded and validated at the HTTP boundary (http_routes.py).
        conversation = self._conversations.get(conversation_id, consistent=True)
        if conversation is None or conversation.user_id != user_id:
            raise ConversationNotFound()
        return conversation

    def events(
        self,
        user_id: str,
        conversation_id: str,
        *,
        page_id: str | None = None,
        limit: int = DEFAULT_EVENTS_PAGE,
        wait_seconds: float = 0,
    ) -> AgentEventPage:
        if page_id and not _PAGE_ID.match(page_id):
            raise InvalidPageToken()
        after = int(page_id) if page_id else 0
        limit = max(1, min(limit, MAX_EVENTS_PAGE))
        conversation = self._owned(user_id, conversation_id)
        found = self._poll(lambda: self._channel.events_after(conversation.conversation_id, after, limit), wait_seconds)
        results = [
            AgentEventEnvelope(
                id=str(item["event_id"]),
                timestamp=str(item["timestamp"]),
                source=str(item["source"]),
                kind=str(item["kind"]),
                event=json.loads(item["body"]) if item.get("body") else None,
                error_code=item.get("error_code"),
            )
            for item in found
        ]
        next_after = int(found[-1]["seq"]) if found else after
        return AgentEventPage(results=results, next_page_id=str(next_after))

    def send_message(
        self, user_id: str, conversation_id: str, request: SendMessageRequest, idempotency_key: str | None = None
    ) -> SendMessageResponse:
        conversation = self._owned(user_id, conversation_id)
        if conversation.conversation_status not in ACTIVE_STATUSES:
            raise ConversationNotAcceptingMessages()
        if len(_dumps(request.model_dump()).encode()) > MAX_MESSAGE_BYTES:
            raise InvalidRequest(f"A message (text and image URLs) is at most {MAX_MESSAGE_BYTES // 1024} KB")
        if idempotency_key is None or self._idempotency_store is None:
            return self._send(user_id, conversation_id, request)
        check_idempotency_key(idempotency_key)
        envelope = {
            "user_id": user_id,
            "conversation_id": conversation_id,
            "key": idempotency_key,
            "body": request.model_dump(mode="json"),
        }
        return run_once(self._idempotent_send(self._idempotency_store), envelope)

    def _idempotent_send(self, store: Callable[[], BasePersistenceLayer]) -> Callable[..., SendMessageResponse]:
        if self._send_once is None:
            self._send_once = self._make_idempotent_send(store())
            self.register_lambda_context(self._lambda_context)
        return self._send_once

    def _make_idempotent_send(self, store: BasePersistenceLayer) -> Callable[..., SendMessageResponse]:
        def send_once(envelope: dict[str, Any]) -> SendMessageResponse:
            request = SendMessageRequest.model_validate(envelope["body"])
            return self._send(envelope["user_id"], envelope["conversation_id"], request)

        wrapped, self._idempotency_config = make_idempotent(
            send_once,
            store,
            key_path="[user_id, conversation_id, key]",
            output_model=SendMessageResponse,
            expires_after_seconds=self._config.idempotency_ttl_seconds,
        )
        return wrapped

    def _send(self, user_id: str, conversation_id: str, request: SendMessageRequest) -> SendMessageResponse:
        item = {"kind": "message", "text": request.text, "image_urls": request.image_urls, "created_at": now_iso()}
        try:
            seq = self._channel.enqueue(conversation_id, user_id, item, last_active_at=now_epoch_ms())
        except InboxRefused as refused:
            self._owned(user_id, conversation_id)  # gone meanwhile: 404
            raise ConversationNotAcceptingMessages() from refused
        except ChannelContention as contention:
            raise ConversationConflict() from contention
        return SendMessageResponse(message_id=_item_id(seq))

    def confirm(self, user_id: str, conversation_id: str, request: ConfirmRequest) -> SendMessageResponse:
        conversation = self._owned(user_id, conversation_id)
        if (
            conversation.conversation_status not in ACTIVE_STATUSES
            or conversation.agent_status != AgentStatus.WAITING_FOR_CONFIRMATION.value
            or conversation.confirmation_answered_at
        ):
            raise NoConfirmationPending()
        at = now_iso()
        item = {"kind": "confirmation", "accept": request.accept, "reason": request.reason, "created_at": at}
        try:
            seq = self._channel.enqueue(
                conversation_id, user_id, item, last_active_at=now_epoch_ms(), answers_confirmation_at=at
            )
        except InboxRefused as refused:
            self._owned(user_id, conversation_id)
            raise NoConfirmationPending() from refused
        except ChannelContention as contention:
            raise ConversationConflict() from contention
        return SendMessageResponse(message_id=_item_id(seq))

    def workspace(self, user_id: str, conversation_id: str) -> WorkspaceSnapshot:
        conversation = self._owned(user_id, conversation_id)
        stored = self._channel.get_workspace(conversation.conversation_id)
        if stored is None:
            raise WorkspaceNotPublished()
        return WorkspaceSnapshot.model_validate(stored)

    # == both ========================================================================================
    def _poll(self, read: Callable[[], list[dict[str, Any]]], wait_seconds: float) -> list[dict[str, Any]]:
        """`read()` until it finds something or `wait_seconds` (at most 20) have passed: a long
        poll of DynamoDB, a few reads a second at first, then one a second."""
        deadline = self._clock() + max(0.0, min(float(wait_seconds), MAX_WAIT_SECONDS))
        interval = 0.2
        while True:
            found = read()
            remaining = deadline - self._clock()
            if found or remaining <= 0:
                return found
            self._sleep(min(interval, remaining))
            interval = min(1.0, interval * 1.5)


def _item_id(seq: int) -> str:
    return f"{seq:010d}"


def _inbox_item(item: dict[str, Any]) -> InboxItem:
    if item.get("kind") == "confirmation":
        return InboxItem(
            item_id=_item_id(int(item["seq"])),
            kind="confirmation",
            accept=bool(item.get("accept")),
            reason=item.get("reason"),
        )
    return InboxItem(
        item_id=_item_id(int(item["seq"])),
        kind="message",
        text=str(item.get("text") or ""),
        image_urls=list(item.get("image_urls") or []),
    )
