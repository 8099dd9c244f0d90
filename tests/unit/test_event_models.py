"""The typed events (models/aws_events.py, models/workflow_steps.py): what the local stack builds
parses as what AWS delivers, and input that does not fit is refused, named, before any AWS call."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.parser.models import (
    DynamoDBStreamLambdaOnFailureDestinationModel,
    DynamoDBStreamModel,
    SqsModel,
)
from conversation_service.logic.conversation_stream import StreamChange
from conversation_service.models.aws_events import (
    ConversationStreamRecord,
    CreateConversationMessage,
    EcsTaskStateChange,
    QueuedEvent,
)
from conversation_service.models.errors import WORKFLOW_STEP_ERRORS, InvalidWorkflowInput
from conversation_service.models.workflow_steps import (
    LaunchSandboxInput,
    MarkRunningInput,
    RecordFailureInput,
    step_input,
)

from devstack.fargate import LocalFargate, SandboxTask
from devstack.sqs_poller import SqsEventSource
from devstack.stream_pump import StreamPump
from tests.support.api_gateway import FakeLambdaContext

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/conversations/stream/2026-01-01T00:00:00.000"
# The sample's INSERT image: a whole conversation item as the API writes it.
IMAGE = json.loads((Path(__file__).resolve().parents[2] / "events" / "conversation_stream.json").read_text())[
    "Records"
][0]["dynamodb"]["NewImage"]
CONVERSATION_ID = IMAGE["conversation_id"]["S"]


def _pump() -> StreamPump:
    runtime: Any = SimpleNamespace(spec=lambda name: SimpleNamespace(arn=f"arn:aws:lambda:us-east-1:1:function:{name}"))
    return StreamPump(STREAM_ARN, runtime, "ConversationStreamFunction", boto3.Session(region_name="us-east-1"))


def _moto_stream_record(sequence: str = "100", event_name: str = "INSERT") -> dict[str, Any]:
    """A record as GetRecords returns it (boto3 parses the creation time into a datetime)."""
    return {
        "eventID": "7de3041dd709b024af6f29e4fa13d34c",
        "eventName": event_name,
        "eventVersion": "1.0",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2026, 1, 15, 9, 30, tzinfo=UTC),
            "Keys": {"conversation_id": {"S": CONVERSATION_ID}},
            "NewImage": IMAGE,
            "SequenceNumber": sequence,
            "SizeBytes": 300,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def test_the_local_stream_pumps_records_parse_and_keep_the_conversation() -> None:
    pump = _pump()
    record = pump._as_lambda_record(_moto_stream_record())
    parse({"Records": [record]}, DynamoDBStreamModel)  # the shape Lambda's mapping delivers
    change = StreamChange.from_record(ConversationStreamRecord.model_validate(record))
    assert change.new is not None and change.new.conversation_id == CONVERSATION_ID
    assert change.new.conversation_status == "STARTING"
    assert (change.event_name, change.at) == ("INSERT", "2026-01-15T09:30:00.000Z")
    # What the pump sends to the on-failure queue once a batch has used its retries.
    described = pump._failure_record("shard-1", [record], retries=5)
    failure = DynamoDBStreamLambdaOnFailureDestinationModel.model_validate(described)
    assert failure.ddb_stream_batch_info.start_sequence_number == "100"


def test_the_local_queue_and_ecs_events_parse_as_aws_sends_them() -> None:
    source = SqsEventSource(
        "http://q",
        "arn:aws:sqs:us-east-1:123456789012:q",
        Any,
        "EventIntakeFunction",
        boto3.Session(region_name="us-east-1"),
    )  # type: ignore[arg-type]
    body = json.dumps(
        {
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "CreateConversation",
            "source": "openhands.integrations",
            "account": "123456789012",
            "time": "2026-11-26T12:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {"user_id": "user-1"},
        }
    )
    received = {  # ReceiveMessage with AttributeNames=All, as the poller asks
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "Body": body,
        "Attributes": {
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "SentTimestamp": "1795700000000",
            "ApproximateReceiveCount": "2",
            "ApproximateFirstReceiveTimestamp": "1795700000001",
        },
        "MessageAttributes": {"origin": {"StringValue": "test", "DataType": "String"}},
    }
    record = source.lambda_record(received)
    parse({"Records": [record]}, SqsModel)
    message = CreateConversationMessage.model_validate(record)
    assert message.attributes.ApproximateReceiveCount == "2"
    assert QueuedEvent.model_validate_json(message.body).detail == {"user_id": "user-1"}

    fargate = LocalFargate(None, "arn:aws:ecs:us-east-1:123456789012:cluster/sandboxes", Any)  # type: ignore[arg-type]
    task = SandboxTask(
        task_arn="arn:aws:ecs:us-east-1:123456789012:task/sandboxes/0123",
        task_id="0123",
        conversation_id=CONVERSATION_ID,
        process=Any,  # type: ignore[arg-type]
        marker="m",
        directory=Any,  # type: ignore[arg-type]
        workspace_root=Any,  # type: ignore[arg-type]
        agent_server_port=8000,
        started_by=CONVERSATION_ID,
    )
    stopped = EcsTaskStateChange.model_validate(
        fargate.task_stopped_event(task, "Essential container in task exited", "EssentialContainerExited", 137)
    )
    assert (stopped.detail.startedBy, stopped.detail.exit_code) == (CONVERSATION_ID, 137)


def test_a_malformed_stream_record_fails_alone_as_a_batch_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real handler: a record that is not a conversation change fails as that record
    (the mapping retries it, then describes it to the on-failure queue); nothing is called."""
    for name in ("CONVERSATIONS_TABLE", "USERS_TABLE", "CHANNEL_TABLE", "CONTEXT_BUCKET", "EVENT_BUS_NAME"):
        monkeypatch.setenv(name, "unused")
    monkeypatch.setenv("STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:unused")
    monkeypatch.setenv("SANDBOX_CLUSTER_ARN", "arn:aws:ecs:us-east-1:123456789012:cluster/unused")
    from conversation_stream.app import lambda_handler

    pump = _pump()
    keys_only = pump._as_lambda_record(_moto_stream_record("100", event_name="REMOVE"))
    del keys_only["dynamodb"]["NewImage"]  # a change with no image names no conversation: nothing to do
    upsert = pump._as_lambda_record(_moto_stream_record("101", event_name="UPSERT"))
    no_keys = pump._as_lambda_record(_moto_stream_record("102"))
    del no_keys["dynamodb"]["Keys"]
    answer = lambda_handler({"Records": [keys_only, upsert, no_keys]}, FakeLambdaContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "101"}, {"itemIdentifier": "102"}]}


def test_an_event_that_is_not_an_ecs_task_state_change_is_refused() -> None:
    with pytest.raises(ValidationError):
        EcsTaskStateChange.model_validate({"source": "aws.ecs", "detail-type": "ECS Task State Change", "detail": {}})


@pytest.mark.parametrize(
    ("model", "event", "named"),
    [
        (LaunchSandboxInput, {"conversation_id": CONVERSATION_ID}, "task_token: Field required"),
        (LaunchSandboxInput, {"task_token": "secret-token-value"}, "conversation_id: Field required"),
        (
            MarkRunningInput,
            {"conversation_id": CONVERSATION_ID, "sandbox": {"agent_server_url": "http://10.0.0.1:8000"}},
            "sandbox.agent_conversation_id: Field required",
        ),
        (RecordFailureInput, {"conversation_id": CONVERSATION_ID, "surprise": 1}, "surprise: Extra inputs"),
        (RecordFailureInput, ["not", "an", "object"], "input: Input should be"),
    ],
    ids=["no task token", "no conversation", "bad sandbox report", "unknown field", "not an object"],
)
def test_bad_step_input_is_a_typed_error_naming_the_field_not_its_value(model: Any, event: Any, named: str) -> None:
    with pytest.raises(InvalidWorkflowInput) as raised:
        step_input(event, model)
    assert named in str(raised.value), str(raised.value)
    assert "secret-token-value" not in str(raised.value)
    # Lambda names the error after the class: RecordFailure knows it (logic/workflow.py).
    assert WORKFLOW_STEP_ERRORS[type(raised.value).__name__] is InvalidWorkflowInput
    assert not InvalidWorkflowInput.retryable
