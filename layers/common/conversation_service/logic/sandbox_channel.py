"""The sandbox's side door (docs/sandbox-protocol.md).

A sandbox proves which conversation it serves with `<conversation_id>.<secret>`; only the
secret's SHA-256 is stored. The token opens that conversation's context once (the first
fetch wins: a token seen later in a log cannot fetch secrets again) and its status reports.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from pydantic import ValidationError

from conversation_service.logic.clock import now_iso, seconds_since
from conversation_service.logic.repositories import clone_url_host, provider_token_key, provider_username
from conversation_service.logic.validation import validate_conversation_id
from conversation_service.logic.workflow import sandbox_token_hash
from conversation_service.models.context import (
    SANDBOX_ERROR_CODES,
    SANDBOX_PHASES,
    AgentContext,
    SandboxContext,
    SandboxEvent,
    SandboxLLM,
    SandboxReady,
    SandboxRepository,
)
from conversation_service.models.domain import Conversation, ConversationStatus, RuntimeStatus
from conversation_service.models.errors import (
    InvalidConversationId,
    InvalidRequest,
    SandboxAddressRefused,
    SandboxNoLongerWanted,
    Unauthorized,
    WorkflowNotWaiting,
)
from conversation_service.observability import record_phase_duration
from conversation_service.ports import (
    ContextStore,
    ConversationStore,
    SandboxFleet,
    SecretBox,
    UserStore,
    WorkflowEngine,
)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def checked_agent_server_url(reported: str, own_hosts: frozenset[str]) -> str:
    """`http://<host>:<port>` when `reported` is exactly that, with the sandbox's own host (its
    task's private IPv4 on AWS, loopback locally); SandboxAddressRefused otherwise. The URL is
    where the service (and users following it) will send the session key."""
    try:
        parts = urlsplit(reported)
        port = parts.port
    except ValueError:
        raise SandboxAddressRefused("The agent-server URL is not a URL") from None
    host = (parts.hostname or "").lower()
    if (
        parts.scheme != "http"
        or parts.username is not None
        or parts.password is not None
        or port is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise SandboxAddressRefused("The agent-server URL must be http://<address>:<port> and nothing more")
    if host not in own_hosts:
        raise SandboxAddressRefused()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class SandboxChannel:
    def __init__(
        self,
        conversations: ConversationStore,
        users: UserStore,
        context: ContextStore,
        secret_box: SecretBox,
        engine: WorkflowEngine,
        fleet: SandboxFleet,
        agent_server_address: str = "task",
    ) -> None:
        """`agent_server_address`: "task" (the ECS task's own private IPv4) or "loopback"."""
        self._conversations = conversations
        self._users = users
        self._context = context
        self._secret_box = secret_box
        self._engine = engine
        self._fleet = fleet
        self._agent_server_address = agent_server_address

    def _own_hosts(self, conversation: Conversation) -> frozenset[str]:
        if self._agent_server_address == "loopback":
            return LOOPBACK_HOSTS
        address = self._fleet.private_address(conversation.task_arn) if conversation.task_arn else None
        if not address:
            raise SandboxAddressRefused("This sandbox's task has no network address yet")
        return frozenset({address})

    def authenticate(self, authorization: str | None) -> Conversation:
        scheme, _, token = (authorization or "").partition(" ")
        conversation_id, _, secret = token.partition(".")
        if scheme.lower() != "bearer" or not secret or len(token) > 300:
            raise Unauthorized("Missing or invalid sandbox token")
        try:
            validate_conversation_id(conversation_id)
        except InvalidConversationId as error:
            raise Unauthorized("Missing or invalid sandbox token") from error
        conversation = self._conversations.get(conversation_id, consistent=True)
        expected = conversation.sandbox_token_hash if conversation else None
        if not expected or not hmac.compare_digest(expected, sandbox_token_hash(token)):
            raise Unauthorized("Missing or invalid sandbox token")
        assert conversation is not None
        return conversation

    def deliver_context(self, conversation: Conversation) -> SandboxContext:
        if conversation.conversation_status != ConversationStatus.STARTING or not conversation.context_key:
            raise SandboxNoLongerWanted()
        session_api_key = secrets.token_urlsafe(32)
        sealed = self._secret_box.seal(
            {"session_api_key": session_api_key},
            owner=conversation.user_id,
            conversation_id=conversation.conversation_id,
        )
        if not self._conversations.claim_context_delivery(conversation.conversation_id, sealed):
            raise SandboxNoLongerWanted("The context of this conversation was already delivered")
        context = AgentContext.model_validate(self._context.get_json(conversation.context_key))
        settings = self._users.get_settings(conversation.user_id)
        user_secrets = self._users.open_secrets(settings) if settings else None
        repository = None
        if context.repository:
            # Per provider, per host for enterprise: the token only goes to its own host.
            host = clone_url_host(context.repository.clone_url)
            token_key = provider_token_key(context.repository.git_provider, host)
            repository = SandboxRepository(
                clone_url=context.repository.clone_url,
                name=context.repository.name,
                branch=context.repository.branch,
                commit=context.repository.commit,
                username=provider_username(context.repository.git_provider),
                password=user_secrets.provider_tokens.get(token_key) if user_secrets else None,
            )
        return SandboxContext(
            conversation_id=conversation.conversation_id,
            repository=repository,
            workspace_branch=context.workspace_branch,
            agent=context.agent,
            llm=SandboxLLM(
                model=context.llm.model,
                api_key=user_secrets.llm_api_key if user_secrets else None,
                base_url=context.llm.base_url,
            ),
            session_api_key=session_api_key,
            first_message=context.first_message,
            conversation_instructions=context.conversation_instructions,
            mcp_config=(
                self._users.open_for(
                    conversation.user_id, context.sealed_mcp_config, conversation_id=conversation.conversation_id
                )
                if context.sealed_mcp_config
                else {}
            ),
            setup_script_timeout_seconds=context.runtime.setup_script_timeout_seconds,
        )

    def report(self, conversation: Conversation, event: SandboxEvent) -> None:
        if conversation.conversation_status != ConversationStatus.STARTING or not conversation.task_token:
            raise SandboxNoLongerWanted()
        try:
            self._handle(conversation, conversation.task_token, event)
        except WorkflowNotWaiting as error:
            raise SandboxNoLongerWanted() from error

    def _handle(self, conversation: Conversation, task_token: str, event: SandboxEvent) -> None:
        conversation_id = conversation.conversation_id
        if event.type == "phase":
            if event.phase not in SANDBOX_PHASES:
                raise InvalidRequest(f"Unknown phase {event.phase!r}; expected one of {', '.join(SANDBOX_PHASES)}")
            if not self._conversations.set_runtime_phase(conversation_id, RuntimeStatus(event.phase), at=now_iso()):
                raise SandboxNoLongerWanted()
            if conversation.timeline:
                last = conversation.timeline[-1]
                record_phase_duration(last.phase, seconds_since(last.at))
            self._engine.heartbeat(task_token)
        elif event.type == "heartbeat":
            self._engine.heartbeat(task_token)
        elif event.type == "ready":
            reported = event.model_dump(include=set(SandboxReady.model_fields) - {"timings"})
            reported |= {"timings": event.timings or {}, "reported_at": now_iso()}
            try:
                ready = SandboxReady.model_validate(reported)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise InvalidRequest(f"Invalid ready report: {where}: {first['msg']}") from None
            url = checked_agent_server_url(ready.agent_server_url, self._own_hosts(conversation))
            if event.session_api_key:  # a warm sandbox's own key replaces the one the context carried
                sealed = self._secret_box.seal({"session_api_key": event.session_api_key}, owner=conversation.user_id)
                if not self._conversations.update_starting(conversation_id, sealed_session_api_key=sealed):
                    raise SandboxNoLongerWanted()
            self._engine.succeed(task_token, ready.model_copy(update={"agent_server_url": url}).model_dump())
        else:
            code = event.error_code if event.error_code in SANDBOX_ERROR_CODES else "INTERNAL"
            details = dict(event.details or {})
            if isinstance(details.get("output_tail"), str):
                details["output_tail"] = details["output_tail"][-4096:]
            message = (event.message or f"The sandbox failed with {code}")[:1000]
            failure = {"error_code": code, "message": message, "details": details}
            if not self._conversations.update_starting(conversation_id, sandbox_failure=failure):
                raise SandboxNoLongerWanted()
            self._engine.fail(task_token, code, {"message": message})
