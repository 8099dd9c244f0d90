"""Builds the services from configuration, once per process (Lambda reuses them warm)."""

from __future__ import annotations

from functools import lru_cache

from conversation_service.config import get_config
from conversation_service.dal.channel import ChannelStore
from conversation_service.dal.context_store import ContextStore
from conversation_service.dal.conversations import ConversationStore
from conversation_service.dal.events import EventPublisher
from conversation_service.dal.idempotency import idempotency_store
from conversation_service.dal.page_tokens import PageTokenSealer
from conversation_service.dal.pool import PoolStore, ReconcilerNudge
from conversation_service.dal.queues import DeadLetterQueue
from conversation_service.dal.sandbox_tokens import SandboxTokenSealer
from conversation_service.dal.sandboxes import SandboxFleet
from conversation_service.dal.secrets import SecretBox
from conversation_service.dal.users import UserStore
from conversation_service.dal.workflow import WorkflowEngine
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


@lru_cache(maxsize=1)
def user_store() -> UserStore:
    config = get_config()
    return UserStore(config.users_table, SecretBox(config.secrets_key_id))


@lru_cache(maxsize=1)
def conversation_store() -> ConversationStore:
    config = get_config()
    return ConversationStore(config.conversations_table, config.users_table)


@lru_cache(maxsize=1)
def conversation_service() -> ConversationService:
    config = get_config()
    return ConversationService(
        config,
        conversation_store(),
        user_store(),
        ContextStore(config.context_bucket),
    )


@lru_cache(maxsize=1)
def settings_service() -> SettingsService:
    return SettingsService(get_config(), user_store())


@lru_cache(maxsize=1)
def creation_workflow() -> CreationWorkflow:
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
    config = get_config()
    return WarmPool(
        config,
        PoolStore(config.pool_table),
        SandboxFleet(config),
        SandboxTokenSealer(config.sandbox_token_key_id),
        ReconcilerNudge(config.pool_reconciler_function),
    )


@lru_cache(maxsize=1)
def pool_channel() -> PoolChannel:
    config = get_config()
    return PoolChannel(config, PoolStore(config.pool_table))


@lru_cache(maxsize=1)
def sandbox_channel() -> SandboxChannel:
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
def channel_store() -> ChannelStore:
    config = get_config()
    return ChannelStore(config.channel_table, config.conversations_table, config.context_bucket)


@lru_cache(maxsize=1)
def agent_channel() -> AgentChannel:
    config = get_config()
    return AgentChannel(
        config,
        conversation_store(),
        user_store(),
        ContextStore(config.context_bucket),
        channel_store(),
        idempotency_store(config.idempotency_table),
    )


@lru_cache(maxsize=1)
def lifecycle_service() -> LifecycleService:
    config = get_config()
    return LifecycleService(config, conversation_store(), user_store(), PageTokenSealer(config.secrets_key_id))


@lru_cache(maxsize=1)
def conversation_stream_consumer() -> ConversationStreamConsumer:
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
def event_intake() -> EventIntake:
    config = get_config()
    return EventIntake(
        conversation_service(), config.trusted_event_sources, DeadLetterQueue(config.create_conversation_dlq_url)
    )


@lru_cache(maxsize=1)
def sandbox_watch() -> SandboxWatch:
    return SandboxWatch(conversation_store(), WorkflowEngine(get_config().state_machine_arn))


@lru_cache(maxsize=1)
def stale_start_sweeper() -> StaleStartSweeper:
    return StaleStartSweeper(get_config(), conversation_store())


def reset() -> None:
    """Forget the built services (tests change the environment between cases)."""
    for factory in (
        user_store,
        conversation_store,
        conversation_service,
        settings_service,
        creation_workflow,
        warm_pool,
        pool_channel,
        sandbox_channel,
        channel_store,
        agent_channel,
        lifecycle_service,
        conversation_stream_consumer,
        event_intake,
        sandbox_watch,
        stale_start_sweeper,
        get_config,
    ):
        factory.cache_clear()
