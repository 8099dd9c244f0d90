"""The service's logic composed on the in-memory ports (tests/support/fakes.py), as
`conversation_service.services` composes it on `dal/`: what tests/unit drives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conversation_service.config import ServiceConfig
from conversation_service.logic.conversations import ConversationService
from conversation_service.logic.event_intake import EventIntake
from conversation_service.logic.lifecycle import LifecycleService
from conversation_service.logic.repositories import RepositoryResolver, RepositoryVerifier
from conversation_service.logic.sandbox_watch import SandboxWatch
from conversation_service.logic.settings import SettingsService
from conversation_service.logic.sweeper import StaleStartSweeper
from conversation_service.logic.workflow import CreationWorkflow
from conversation_service.models.api import CreateConversationRequest, SettingsUpdate

from tests.support.fakes import (
    InMemoryContextStore,
    InMemoryConversationStore,
    InMemoryDeadLetterQueue,
    InMemoryEventPublisher,
    InMemorySandboxFleet,
    InMemoryUserStore,
    InMemoryWorkflowEngine,
    LocalPageTokenSealer,
    LocalSandboxTokenSealer,
)
from tests.support.values import LLM_KEY


def unit_config(**overrides: Any) -> ServiceConfig:
    """A ServiceConfig as the template gives the functions, with local repositories allowed."""
    return ServiceConfig(
        state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:CreationWorkflow",
        sandbox_api_url="https://sandbox-api.example/",
        allow_local_repositories=True,
        **overrides,
    )


@dataclass
class InMemoryService:
    """Every port in memory and the logic built on them; `config` can be replaced between calls."""

    config: ServiceConfig = field(default_factory=unit_config)
    users: InMemoryUserStore = field(default_factory=InMemoryUserStore)
    context: InMemoryContextStore = field(default_factory=InMemoryContextStore)
    engine: InMemoryWorkflowEngine = field(default_factory=InMemoryWorkflowEngine)
    fleet: InMemorySandboxFleet = field(default_factory=InMemorySandboxFleet)
    dead_letters: InMemoryDeadLetterQueue = field(default_factory=InMemoryDeadLetterQueue)
    publisher: InMemoryEventPublisher = field(default_factory=InMemoryEventPublisher)
    page_tokens: LocalPageTokenSealer = field(default_factory=LocalPageTokenSealer)
    token_sealer: LocalSandboxTokenSealer = field(default_factory=LocalSandboxTokenSealer)
    conversations: InMemoryConversationStore = field(init=False)
    sleeps: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.conversations = InMemoryConversationStore(self.users)

    def sleep(self, seconds: float) -> None:  # no test waits for a backoff
        self.sleeps.append(seconds)

    # -- the logic, built on these ports
    def conversation_service(
        self,
        *,
        id_factory: Callable[[], str] | None = None,
        resolver: RepositoryResolver | None = None,
        verifier: RepositoryVerifier | None = None,
    ) -> ConversationService:
        extra: dict[str, Any] = {"id_factory": id_factory} if id_factory else {}
        return ConversationService(
            self.config,
            self.conversations,
            self.users,
            self.context,
            resolver=resolver,
            verifier=verifier,
            sleep=self.sleep,
            **extra,
        )

    def settings_service(self) -> SettingsService:
        return SettingsService(self.config, self.users)

    def lifecycle(self) -> LifecycleService:
        return LifecycleService(self.config, self.conversations, self.users, self.page_tokens, sleep=self.sleep)

    def workflow(self) -> CreationWorkflow:
        return CreationWorkflow(
            self.config, self.conversations, self.users, self.context, self.fleet, self.engine, self.token_sealer
        )

    def sweeper(self) -> StaleStartSweeper:
        return StaleStartSweeper(self.config, self.conversations)

    def sandbox_watch(self) -> SandboxWatch:
        return SandboxWatch(self.conversations, self.engine)

    def event_intake(self, trusted_sources: list[str]) -> EventIntake:
        return EventIntake(self.conversation_service(), trusted_sources, self.dead_letters)

    # -- what most tests do first
    def configure_user(self, user_id: str = "user-1", **settings: Any) -> None:
        """A user who can create conversations: an LLM model and key (and whatever `settings` adds)."""
        update = SettingsUpdate.model_validate(
            {"llm_model": "anthropic/claude-sonnet-4", "llm_api_key": LLM_KEY, **settings}
        )
        self.settings_service().update(user_id, update)

    def create(
        self, body: dict[str, Any] | None = None, *, user_id: str = "user-1", idempotency_key: str | None = None
    ) -> str:
        request = CreateConversationRequest.model_validate(body or {})
        return self.conversation_service().create(user_id, request, idempotency_key).conversation_id
