"""The events AWS delivers to the functions, as Powertools parser models (pydantic): the
conversations table's stream records, ECS's task state changes and the CreateConversation
queue's messages (an EventBridge event in an SQS record). Handlers parse with these (or hand them
to BatchProcessor as its `model`), so a record that does not fit fails as that record, named,
instead of as a KeyError somewhere below.
"""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.utilities.parser.models import (
    DynamoDBStreamChangedRecordModel,
    DynamoDBStreamRecordModel,
    EventBridgeModel,
    SqsRecordModel,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

# An item in DynamoDB's attribute-value form ({"S": "..."}, {"N": "1"}, {"M": {...}}...): the
# store turns it into a Conversation (ConversationStore.conversation_from_item), one translation.
AttributeValueItem = dict[str, dict[str, Any]]
# Each function reads one of these: their validators are built at first use, not at import.
DEFERRED = ConfigDict(defer_build=True)


# -- the conversations table's stream (ConversationStreamFunction) ---------------------------------
class ConversationChange(DynamoDBStreamChangedRecordModel):
    """A record's `dynamodb`: the images stay in attribute-value form (Powertools would turn them
    into plain values; the store reads the form DynamoDB writes)."""

    model_config = DEFERRED

    Keys: AttributeValueItem
    NewImage: AttributeValueItem | None = None
    OldImage: AttributeValueItem | None = None

    @field_validator("Keys", "NewImage", "OldImage", mode="before")
    @classmethod
    def deserialize_field(cls, value: Any) -> Any:  # replaces Powertools' deserialising validator
        return value


class ConversationStreamRecord(DynamoDBStreamRecordModel):
    """One record of the conversations table's stream (NEW_AND_OLD_IMAGES)."""

    model_config = DEFERRED

    dynamodb: ConversationChange


# -- ECS (SandboxWatchFunction's rule on the default bus) --------------------------------------
class EcsContainerState(BaseModel):
    model_config = DEFERRED

    name: str | None = None
    lastStatus: str | None = None
    exitCode: int | None = None


class EcsTaskState(BaseModel):
    """The fields of an "ECS Task State Change" detail the service reads (ECS sends more)."""

    model_config = DEFERRED

    clusterArn: str
    taskArn: str
    lastStatus: str
    startedBy: str | None = None  # the conversation id, or the pool sandbox's id (models/pool.py)
    stoppedReason: str = ""
    stopCode: str | None = None
    containers: list[EcsContainerState] = Field(default_factory=list)

    @property
    def exit_code(self) -> int | None:
        """The first container's exit code that ECS reported (a sandbox task has one container)."""
        return next((c.exitCode for c in self.containers if c.exitCode is not None), None)


class EcsTaskStateChange(EventBridgeModel):
    model_config = DEFERRED

    source: Literal["aws.ecs"]
    detail_type: Literal["ECS Task State Change"] = Field(alias="detail-type")
    detail: EcsTaskState


# -- the CreateConversation queue (EventIntakeFunction) -------------------------------------------
class CreateConversationMessage(SqsRecordModel):
    """One message of CreateConversationQueue: `body` is the EventBridge event as the rule
    delivered it (parsed by EventIntake, which dead-letters what does not fit, with the reason)."""

    model_config = DEFERRED

    body: str


class QueuedEvent(EventBridgeModel):
    """The EventBridge event in a CreateConversation message's body. Its detail is checked
    against CreateConversationDetail once the source and detail-type are known."""

    model_config = DEFERRED

    account: str | None = None  # type: ignore[assignment]  # not read; moto's bus-to-queue delivery leaves it out
    detail: dict[str, Any]
