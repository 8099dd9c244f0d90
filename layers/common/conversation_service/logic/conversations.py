"""Creating and reading conversations: the spec's rules in one place."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable

from conversation_service.config import ServiceConfig
from conversation_service.logic.clock import now_epoch_ms, now_iso
from conversation_service.logic.idempotency import check_idempotency_key
from conversation_service.logic.mcp import sealed_mcp_config_of
from conversation_service.logic.repositories import RepositoryResolver, RepositoryVerifier
from conversation_service.logic.slot_policy import SlotPolicy
from conversation_service.models.api import (
    ConversationView,
    CreateConversationRequest,
    CreateConversationResponse,
)
from conversation_service.models.domain import (
    KNOWN_AGENTS,
    AgentDefaults,
    Conversation,
    ConversationStatus,
    ConversationTrigger,
    CreationSnapshot,
    ResolvedRepository,
    RuntimeStatus,
    TimelineEntry,
    UserSettings,
)
from conversation_service.models.errors import (
    AgentNotFound,
    ConversationChanged,
    ConversationConflict,
    ConversationIdTaken,
    ConversationNotFound,
    EventSourceNotAuthorised,
    IdempotencyConflict,
    InvalidRequest,
    LLMAuthenticationMissing,
    SettingsNotFound,
    WriteContention,
)
from conversation_service.observability import logger
from conversation_service.ports import ContextStore, ConversationStore, UserStore

# Requests larger than this (serialized) live in S3 rather than on the DynamoDB item (400 KB);
# so do sealed MCP configurations larger than this: the item stays well under its limit.
INLINE_REQUEST_LIMIT_BYTES = 64 * 1024
INLINE_SEALED_MCP_LIMIT_BYTES = 64 * 1024


# Keyed creates: the id is a function of (user, key), so every attempt with one key writes the
# same item and the conditional Put lets exactly one of them create it.
IDEMPOTENT_ID_NAMESPACE = uuid.UUID("5d0c3a52-5b87-4d0e-9d53-8f1f4c2b6a10")


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def keyed_conversation_id(user_id: str, idempotency_key: str) -> str:
    return uuid.uuid5(IDEMPOTENT_ID_NAMESPACE, json.dumps([user_id, idempotency_key])).hex


def request_fingerprint(request: CreateConversationRequest) -> str:
    canonical = json.dumps(request.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ConversationService:
    def __init__(
        self,
        config: ServiceConfig,
        conversations: ConversationStore,
        users: UserStore,
        context: ContextStore,
        *,
        resolver: RepositoryResolver | None = None,
        verifier: RepositoryVerifier | None = None,
        id_factory: Callable[[], str] = new_conversation_id,
        slot_policy: SlotPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._conversations = conversations
        self._users = users
        self._context = context
        self._resolver = resolver or RepositoryResolver(config)
        self._verifier = verifier or RepositoryVerifier(config)
        self._new_id = id_factory
        self._slots = slot_policy or SlotPolicy.from_config(config, conversations, sleep=sleep)

    # -- create ------------------------------------------------------------------------------
    def create(
        self,
        user_id: str,
        request: CreateConversationRequest,
        idempotency_key: str | None = None,
        *,
        event_source: str | None = None,
    ) -> CreateConversationResponse:
        """Create a conversation. With an Idempotency-Key the create converges: every attempt
        with that key and body (concurrent, or after a lost answer) answers the first answer,
        because they all write the one item whose id derives from (user, key).
        `event_source`: the integration whose event asks for it (None: the user's own request);
        it must be one the user authorised in their settings."""
        keyed_id = fingerprint = None
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            keyed_id, fingerprint = keyed_conversation_id(user_id, idempotency_key), request_fingerprint(request)
        try:
            snapshot = self._conversations.creation_snapshot(user_id, keyed_id)
        except WriteContention as busy:
            raise ConversationConflict() from busy
        if event_source is not None:  # before any answer, a replayed one included
            authorising = check_usable_settings(snapshot.settings)
            if event_source not in authorising.authorized_event_sources:
                raise EventSourceNotAuthorised()
        if snapshot.existing is not None:
            return _first_answer(snapshot.existing, fingerprint)
        settings = check_usable_settings(snapshot.settings)
        repository = self._check_repository(settings, request)
        conversation = self._new_conversation(user_id, settings, request, repository, keyed_id, fingerprint)
        try:
            self._insert(conversation, settings, snapshot)
        except ConversationIdTaken as taken:  # a keyed create that another attempt got to first
            existing = taken.existing or self._conversations.get(conversation.conversation_id, consistent=True)
            if existing is None:
                raise ConversationConflict() from taken
            return _first_answer(existing, fingerprint)
        return CreateConversationResponse(
            conversation_id=conversation.conversation_id, conversation_status=conversation.conversation_status
        )

    def _check_repository(
        self, settings: UserSettings, request: CreateConversationRequest
    ) -> ResolvedRepository | None:
        repository = request.repository
        git_provider = request.git_provider
        if repository is None and request.suggested_task is not None:
            repository, git_provider = request.suggested_task.repo, request.suggested_task.git_provider or git_provider
        if repository is None and request.create_microagent is not None:
            repository = request.create_microagent.repo
            git_provider = request.create_microagent.git_provider or git_provider
        if repository is None:
            if request.selected_branch is not None:
                raise InvalidRequest("selected_branch needs a repository")
            return None
        location = self._resolver.locate(repository, git_provider)
        token = None
        if location.token_key in settings.provider_tokens_set:
            token = self._users.open_secrets(settings).provider_tokens.get(location.token_key)
        return self._verifier.verify(location, request.selected_branch, token)

    def _new_conversation(
        self,
        user_id: str,
        settings: UserSettings,
        request: CreateConversationRequest,
        repository: ResolvedRepository | None,
        keyed_id: str | None = None,
        fingerprint: str | None = None,
    ) -> Conversation:
        defaults = AgentDefaults()
        at = now_iso()
        conversation_id = keyed_id or self._new_id()
        stored_request = request.model_dump(mode="json", exclude_none=True)
        mcp_config = stored_request.pop("mcp_config", None)
        sealed_mcp_config = (
            self._users.seal_for(user_id, mcp_config, conversation_id=conversation_id) if mcp_config else None
        )
        return Conversation(
            conversation_id=conversation_id,
            user_id=user_id,
            conversation_status=ConversationStatus.STARTING,
            runtime_status=RuntimeStatus.QUEUED,
            title=_default_title(conversation_id, request),
            trigger=_trigger(request),
            created_at=at,
            updated_at=at,
            last_active_at=now_epoch_ms(),
            repository=repository.display_name if repository else None,
            clone_url=repository.clone_url if repository else None,
            repository_name=repository.name if repository else None,
            git_provider=repository.git_provider if repository else None,
            selected_branch=repository.branch if repository else None,
            branch_requested=repository.branch_requested if repository else False,
            commit=repository.commit if repository else None,
            agent=settings.agent or defaults.agent,
            max_iterations=settings.max_iterations or defaults.max_iterations,
            confirmation_mode=(
                settings.confirmation_mode if settings.confirmation_mode is not None else defaults.confirmation_mode
            ),
            security_analyzer=settings.security_analyzer or defaults.security_analyzer,
            llm_model=settings.llm_model or "",
            llm_base_url=settings.llm_base_url,
            sandbox_image=self._config.default_sandbox_image,  # the task definition's image: the one that runs
            runtime=self._config.default_runtime,
            timeline=[TimelineEntry(phase=RuntimeStatus.QUEUED.value, at=at)],
            request=stored_request,
            request_fingerprint=fingerprint,
            sealed_mcp_config=sealed_mcp_config,
        )

    def _insert(self, conversation: Conversation, settings: UserSettings, snapshot: CreationSnapshot) -> None:
        """Write the conversation under the slot policy (`logic/slot_policy.py`); a colliding
        drawn id silently gets a fresh one (a keyed id is not redrawn: ConversationIdTaken goes to
        the caller). The snapshot's count tells the policy whether the user is at the limit."""
        limit = settings.max_active_conversations or self._config.max_active_conversations
        try:
            self._move_large_parts_to_s3(conversation)
            self._slots.claim(_NewConversation(self, conversation), limit, seen_active=snapshot.active_count)
        except ConversationIdTaken:
            # A keyed create another attempt got to first: the prefix is that conversation's
            # (this attempt's own parts have names of their own and go with it).
            raise
        except BaseException:
            self._forget_stored_parts(conversation)  # nothing of a refused or failed creation stays
            raise

    def _write_new(self, conversation: Conversation, write: Callable[[], None]) -> None:
        """One write of a new conversation. Its id taken: by this very write, done; by a keyed
        create's first attempt, ConversationIdTaken; by chance, a fresh id and ConversationChanged
        (the policy writes again)."""
        try:
            write()
        except ConversationIdTaken as taken:
            if _written_by_this_attempt(conversation, taken):
                return
            if conversation.request_fingerprint is not None:
                raise
            self._assign_new_id(conversation)
            raise ConversationChanged() from taken

    def _assign_new_id(self, conversation: Conversation) -> None:
        """The id was taken (by someone else's conversation: its S3 prefix is not ours to clean)."""
        previous_id, conversation.conversation_id = conversation.conversation_id, self._new_id()
        if conversation.request_s3_key:
            conversation.request = self._context.get_json(conversation.request_s3_key)
            conversation.request_s3_key = None
        sealed = sealed_mcp_config_of(self._context, conversation)
        if sealed:  # sealed for the id it had: seal it for the new one
            servers = self._users.open_for(conversation.user_id, sealed, conversation_id=previous_id)
            conversation.sealed_mcp_config = self._users.seal_for(
                conversation.user_id, servers, conversation_id=conversation.conversation_id
            )
            conversation.sealed_mcp_config_key = None
        self._move_large_parts_to_s3(conversation)

    def _move_large_parts_to_s3(self, conversation: Conversation) -> None:
        prefix = f"conversations/{conversation.conversation_id}/"
        # Attempts of one keyed create share the id: each names its parts so none overwrites another's.
        attempt = f"-{uuid.uuid4().hex[:12]}" if conversation.request_fingerprint else ""
        if len(json.dumps(conversation.request)) > INLINE_REQUEST_LIMIT_BYTES:
            key = f"{prefix}request{attempt}.json"
            conversation.request_s3_key = self._context.put_json(key, conversation.request)
            conversation.request = {}
        sealed = conversation.sealed_mcp_config
        if sealed and len(sealed) > INLINE_SEALED_MCP_LIMIT_BYTES:
            key = f"{prefix}mcp_config{attempt}.sealed.json"
            conversation.sealed_mcp_config_key = self._context.put_json(key, {"sealed_mcp_config": sealed})
            conversation.sealed_mcp_config = None

    def _forget_stored_parts(self, conversation: Conversation) -> None:
        if not (conversation.request_s3_key or conversation.sealed_mcp_config_key):
            return
        try:
            self._context.purge_prefix(f"conversations/{conversation.conversation_id}/")
        except Exception:  # the bucket's lifecycle rule expires it anyway; the caller's error matters
            logger.exception("could not remove what a failed creation stored")

    # -- read --------------------------------------------------------------------------------
    def get_owned(self, user_id: str, conversation_id: str) -> Conversation:
        # conversation_id is decoded and validated at the HTTP boundary (http_routes.py).
        conversation = self._conversations.get(conversation_id)
        if conversation is None or conversation.user_id != user_id:
            raise ConversationNotFound()
        return conversation

    def view(self, user_id: str, conversation_id: str) -> ConversationView:
        conversation = self.get_owned(user_id, conversation_id)
        return ConversationView.model_validate(conversation.model_dump(include=set(ConversationView.model_fields)))


def usable_settings(users: UserStore, user_id: str) -> UserSettings:
    """The user's settings, if a conversation can start with them (create and start again)."""
    return check_usable_settings(users.get_settings(user_id))


def check_usable_settings(settings: UserSettings | None) -> UserSettings:
    if settings is None:
        raise SettingsNotFound()
    agent = settings.agent or AgentDefaults().agent
    if agent not in KNOWN_AGENTS:
        raise AgentNotFound()
    if not settings.llm_api_key_set:
        raise LLMAuthenticationMissing()
    if not settings.llm_model:
        raise SettingsNotFound("Settings have no LLM model; set llm_model with POST /api/settings")
    return settings


def _trigger(request: CreateConversationRequest) -> ConversationTrigger:
    if request.create_microagent is not None:
        return ConversationTrigger.MICROAGENT_MANAGEMENT
    if request.suggested_task is not None:
        return ConversationTrigger.SUGGESTED_TASK
    return ConversationTrigger.API


def _default_title(conversation_id: str, request: CreateConversationRequest) -> str:
    if request.create_microagent is not None and request.create_microagent.title:
        return request.create_microagent.title[:200]
    if request.suggested_task is not None:
        return request.suggested_task.title[:200] or f"Conversation {conversation_id[:5]}"
    return f"Conversation {conversation_id[:5]}"


def _first_answer(existing: Conversation, fingerprint: str | None) -> CreateConversationResponse:
    """The answer the first attempt of a keyed create gave, if this attempt asks the same."""
    if fingerprint is None or existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict()
    return CreateConversationResponse(
        conversation_id=existing.conversation_id, conversation_status=ConversationStatus.STARTING
    )


class _NewConversation:
    """A create's claim on a slot: the new conversation written within the limit, or in place of
    the least recently active one."""

    def __init__(self, service: ConversationService, conversation: Conversation) -> None:
        self._service = service
        self._conversation = conversation

    @property
    def user_id(self) -> str:
        return self._conversation.user_id

    def within_limit(self, limit: int) -> None:
        store, conversation = self._service._conversations, self._conversation
        self._service._write_new(conversation, lambda: store.insert_within_limit(conversation, limit))

    def replacing(self, victim: Conversation, *, reason: str) -> None:
        store, conversation = self._service._conversations, self._conversation
        self._service._write_new(
            conversation, lambda: store.insert_replacing(conversation, victim, reason=reason, at=now_iso())
        )


def _written_by_this_attempt(conversation: Conversation, taken: ConversationIdTaken) -> bool:
    """The id is taken by this very write: its answer was lost and botocore sent it again (AWS
    would match the transaction's ClientRequestToken; moto does not), so it is done."""
    return taken.existing is not None and taken.existing.model_dump() == conversation.model_dump()
