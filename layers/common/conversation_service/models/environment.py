"""The environment each function cannot run without, one model per function.

Each `functions/<name>/app.py` checks its model when Lambda imports it (the INIT phase,
`config.require_environment`): a missing or empty variable fails the cold start with a message
naming it, instead of surfacing as a confusing AWS error on the first call (a table called
"conversations", a `StopTask` on the default cluster). Optional settings with a sound default
(limits, timeouts, hosts) stay in `config.ServiceConfig` only.

tests/emulated/test_environment.py checks that the template gives every function what its model
requires, and that each function really refuses to start without each variable.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, StringConstraints

from conversation_service.models.base import ServiceModel

Name = Annotated[str, StringConstraints(min_length=1)]
Arn = Annotated[str, StringConstraints(pattern=r"^arn:")]
Url = Annotated[str, StringConstraints(pattern=r"^https?://")]
CommaList = Annotated[str, StringConstraints(pattern=r"[^,\s]")]  # at least one item


class FunctionEnvironment(ServiceModel):
    """Field names are the variables' names."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class StoreEnvironment(FunctionEnvironment):
    CONVERSATIONS_TABLE: Name
    USERS_TABLE: Name


class AuthorizerEnvironment(FunctionEnvironment):
    USERS_TABLE: Name


class CreationEnvironment(StoreEnvironment):
    """What creating a conversation needs (the API and the event intake)."""

    CONTEXT_BUCKET: Name
    SECRETS_KEY_ID: Name


class ChannelEnvironment(FunctionEnvironment):
    """The channel to a running conversation (its transcript, inbox and workspace)."""

    CHANNEL_TABLE: Name


class ApiEnvironment(CreationEnvironment, ChannelEnvironment):
    """ApiFunction: the conversations API, the owner's side of the channel included."""

    IDEMPOTENCY_TABLE: Name  # a message sent with an Idempotency-Key (logic/idempotency.py)


class ConversationStreamEnvironment(StoreEnvironment, ChannelEnvironment):
    CONTEXT_BUCKET: Name
    STATE_MACHINE_ARN: Arn
    SANDBOX_CLUSTER_ARN: Arn  # stops the sandbox of a conversation that was closed
    EVENT_BUS_NAME: Name


class InitializeContextEnvironment(StoreEnvironment):
    CONTEXT_BUCKET: Name
    SECRETS_KEY_ID: Name


class LaunchSandboxEnvironment(StoreEnvironment):
    SANDBOX_CLUSTER_ARN: Arn
    SANDBOX_TASK_DEFINITION_ARN: Arn
    SANDBOX_SUBNET_IDS: CommaList
    SANDBOX_SECURITY_GROUP_IDS: CommaList
    SANDBOX_API_URL: Url
    SANDBOX_TOKEN_KEY_ID: Arn  # the sandbox token is sealed for the task role under this key
    POOL_TABLE: Name  # claims an idle pool sandbox first


class SandboxPoolEnvironment(FunctionEnvironment):
    POOL_TABLE: Name


class PoolReconcilerEnvironment(FunctionEnvironment):
    POOL_TABLE: Name
    SANDBOX_CLUSTER_ARN: Arn
    SANDBOX_TASK_DEFINITION_ARN: Arn
    SANDBOX_SUBNET_IDS: CommaList
    SANDBOX_SECURITY_GROUP_IDS: CommaList
    SANDBOX_API_URL: Url
    SANDBOX_TOKEN_KEY_ID: Arn  # the pool credential is sealed for the task role under this key


class StopsSandboxEnvironment(StoreEnvironment):
    """MarkRunning and RecordFailure: they stop the task of a conversation that is closed."""

    SANDBOX_CLUSTER_ARN: Arn


class SandboxApiEnvironment(StoreEnvironment, ChannelEnvironment):
    CONTEXT_BUCKET: Name
    SECRETS_KEY_ID: Name
    SANDBOX_CLUSTER_ARN: Arn  # a ready sandbox's address is its task's (DescribeTasks)


class EventIntakeEnvironment(CreationEnvironment):
    CREATE_CONVERSATION_DLQ_URL: Url


class SandboxWatchEnvironment(StoreEnvironment):
    POOL_TABLE: Name  # a pool task's death: the pool's item says whose sandbox it was


class StaleStartSweeperEnvironment(StoreEnvironment):
    pass
