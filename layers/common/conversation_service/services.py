"""Builds the services from configuration, once per process (Lambda reuses them warm).

The one composition root: each factory below wires one service of `logic/` to the `dal/`
classes it needs. Every factory imports what it builds *inside* its body, so a function imports
only its own handler's dependencies (the cold start is mostly imports): a workflow step loads the
workflow's logic and DAL, never the API's models, dulwich, Powertools idempotency or the event
handler. tests/unit/test_imports_per_function.py holds each function to that.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

from conversation_service.config import get_config

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

    from conversation_service.dal.channel import ChannelStore
    from conversation_service.dal.conversations import ConversationStore
    from conversation_service.dal.users import UserStore
    from conversation_service.logic.agent_channel import AgentChannel
    from conversation_service.logic.conversation_stream import ConversationStreamConsumer
    from conversation_service.logic.conversations import ConversationService
    from conversation_service.logic.event_intake import EventIntake
    from conversation_service.logic.lifecycle import LifecycleService
    from conversation_service.logic.pool import PoolChannel, WarmPool
    from conversation_service.logic.sandbox_channel import SandboxChannel
    from conversation_service.logic.sandbox_watch import SandboxWatch
    from conversation_service.logic.settings import SettingsService
    from conversation_service.logic.sweeper import StaleStartSweeper
    from conversation_service.logic.workflow import CreationWorkflow


# -- stores shared by several services ------------------------------------------------------------
@lru_cache(maxsize=1)
def user_store() -> UserStore:
    from conversation_service.dal.secrets import SecretBox
    from conversation_service.dal.users import UserStore

    config = get_config()
    return UserStore(config.users_table, SecretBox(config.secrets_key_id))


@lru_cache(maxsize=1)
def conversation_store() -> ConversationStore:
    from conversation_service.dal.conversations import ConversationStore

    config = get_config()
    return ConversationStore(config.conversations_table, config.users_table)


@lru_cache(maxsize=1)
def channel_store() -> ChannelStore:
    from conversation_service.dal.channel import ChannelStore

    config = get_config()
    return ChannelStore(config.channel_table, config.conversations_table, config.context_bucket)


# -- the API (ApiFunction) and the event intake: creating conversations ---------------------------
@lru_cache(maxsize=1)
def conversation_service() -> ConversationService:
    from conversation_service.dal.context_store import ContextStore
    from conversation_service.logic.conversations import ConversationService

    config = get_config()
    return ConversationService(config, conversation_store(), user_store(), ContextStore(config.context_bucket))


@lru_cache(maxsize=1)
def settings_service() -> SettingsService:
    from conversation_service.logic.settings import SettingsService

    return SettingsService(get_config(), user_store())


@lru_cache(maxsize=1)
def lifecycle_service() -> LifecycleService:
    from conversation_service.dal.page_tokens import PageTokenSealer
    from conversation_service.logic.lifecycle import LifecycleService

    config = get_config()
    return LifecycleService(config, conversation_store(), user_store(), PageTokenSealer(config.secrets_key_id))


@lru_cache(maxsize=1)
def agent_channel() -> AgentChannel:
    """The owner's side of the channel (the API): a message with an Idempotency-Key is sent once."""
    from conversation_service.dal.idempotency import idempotency_store

    table = get_config().idempotency_table
    return _agent_channel(lambda: idempotency_store(table))


@lru_cache(maxsize=1)
def event_intake() -> EventIntake:
    from conversation_service.dal.queues import DeadLetterQueue
    from conversation_service.logic.event_intake import EventIntake

    config = get_config()
    return EventIntake(
        conversation_service(), config.trusted_event_sources, DeadLetterQueue(config.create_conversation_dlq_url)
    )


# -- the sandbox's doors (SandboxApiFunction, SandboxPoolFunction) --------------------------------
@lru_cache(maxsize=1)
def sandbox_channel() -> SandboxChannel:
    from conversation_service.dal.context_store import ContextStore
    from conversation_service.dal.sandboxes import SandboxFleet
    from conversation_service.dal.secrets import SecretBox
    from conversation_service.dal.workflow import WorkflowEngine
    from conversation_service.logic.sandbox_channel import SandboxChannel

    config = get_config()
    return SandboxChannel(
        conversation_store(),
        user_store(),
        ContextStore(config.context_bucket),
        SecretBox(config.secrets_key_id),
        WorkflowEngine(config.state_machine_arn),
        SandboxFleet(config),
        config.sandbox_agent_server_address,
    )


@lru_cache(maxsize=1)
def sandbox_agent_channel() -> AgentChannel:
    """The sandbox's side of the channel (the sandbox API): it sends no keyed messages, so it
    needs no idempotency store (and does not import Powertools idempotency)."""
    return _agent_channel(None)


def _agent_channel(idempotency_store: Callable[[], BasePersistenceLayer] | None) -> AgentChannel:
    from conversation_service.dal.context_store import ContextStore
    from conversation_service.logic.agent_channel import AgentChannel

    config = get_config()
    return AgentChannel(
        config,
        conversation_store(),
        user_store(),
        ContextStore(config.context_bucket),
        channel_store(),
        idempotency_store,
    )


@lru_cache(maxsize=1)
def pool_channel() -> PoolChannel:
    from conversation_service.dal.pool import PoolStore
    from conversation_service.logic.pool import PoolChannel

    config = get_config()
    return PoolChannel(config, PoolStore(config.pool_table))


# -- the creation workflow and what reacts to conversations' changes ------------------------------
@lru_cache(maxsize=1)
def creation_workflow() -> CreationWorkflow:
    from conversation_service.dal.context_store import ContextStore
    from conversation_service.dal.sandbox_tokens import SandboxTokenSealer
    from conversation_service.dal.sandboxes import SandboxFleet
    from conversation_service.dal.workflow import WorkflowEngine
    from conversation_service.logic.workflow import CreationWorkflow

    config = get_config()
    return CreationWorkflow(
        config,
        conversation_store(),
        user_store(),
        ContextStore(config.context_bucket),
        SandboxFleet(config),
        WorkflowEngine(config.state_machine_arn),
        SandboxTokenSealer(config.sandbox_token_key_id),
        warm_pool(),
    )


@lru_cache(maxsize=1)
def warm_pool() -> WarmPool:
    from conversation_service.dal.pool import PoolStore, ReconcilerNudge
    from conversation_service.dal.sandbox_tokens import SandboxTokenSealer
    from conversation_service.dal.sandboxes import SandboxFleet
    from conversation_service.logic.pool import WarmPool

    config = get_config()
    return WarmPool(
        config,
        PoolStore(config.pool_table),
        SandboxFleet(config),
        SandboxTokenSealer(config.sandbox_token_key_id),
        ReconcilerNudge(config.pool_reconciler_function),
    )


@lru_cache(maxsize=1)
def conversation_stream_consumer() -> ConversationStreamConsumer:
    from conversation_service.dal.context_store import ContextStore
    from conversation_service.dal.events import EventPublisher
    from conversation_service.dal.sandboxes import SandboxFleet
    from conversation_service.dal.workflow import WorkflowEngine
    from conversation_service.logic.conversation_stream import ConversationStreamConsumer

    config = get_config()
    return ConversationStreamConsumer(
        conversation_store(),
        creation_workflow(),
        WorkflowEngine(config.state_machine_arn),
        SandboxFleet(config),
        ContextStore(config.context_bucket),
        EventPublisher(config.event_bus_name),
        channel_store(),
    )


@lru_cache(maxsize=1)
def sandbox_watch() -> SandboxWatch:
    from conversation_service.dal.workflow import WorkflowEngine
    from conversation_service.logic.sandbox_watch import SandboxWatch

    return SandboxWatch(conversation_store(), WorkflowEngine(get_config().state_machine_arn))


@lru_cache(maxsize=1)
def stale_start_sweeper() -> StaleStartSweeper:
    from conversation_service.logic.sweeper import StaleStartSweeper

    return StaleStartSweeper(get_config(), conversation_store())


def reset() -> None:
    """Forget the built services and the configuration (tests change the environment between
    cases): every cached factory of this module, found rather than listed, so none is missed."""
    for value in list(globals().values()):
        if callable(value) and getattr(value, "__module__", None) == __name__ and hasattr(value, "cache_clear"):
            value.cache_clear()
    get_config.cache_clear()
