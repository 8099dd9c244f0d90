"""events/: one sample event per function (for `sam local invoke -e` and for reading), kept true
to the models they feed (tests/emulated/test_events.py runs the API and authorizer ones through
their handlers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import DynamoDBStreamModel, SqsModel
from conversation_service.logic.conversation_stream import StreamChange
from conversation_service.logic.runs import run_of_execution
from conversation_service.models.aws_events import (
    ConversationStreamRecord,
    CreateConversationMessage,
    EcsTaskStateChange,
    QueuedEvent,
)
from conversation_service.models.context import SandboxEvent
from conversation_service.models.events import CreateConversationDetail
from conversation_service.models.pool import PoolIdleReport
from conversation_service.models.workflow_steps import (
    InitializeContextInput,
    LaunchSandboxInput,
    MarkRunningInput,
    RecordFailureInput,
    step_input,
)

ROOT = Path(__file__).resolve().parents[2]


EVENTS = ROOT / "events"


FUNCTIONS = ROOT / "functions"


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def test_every_event_file_is_json() -> None:
    files = sorted(EVENTS.glob("*.json"))
    assert files
    for path in files:
        assert isinstance(json.loads(path.read_text()), dict), path.name


@pytest.mark.parametrize("function", sorted(path.name for path in FUNCTIONS.iterdir() if (path / "app.py").exists()))
def test_every_function_has_a_sample_event(function: str) -> None:
    names = [path.stem for path in EVENTS.glob("*.json")]
    assert any(name == function or name.startswith(f"{function}_") for name in names), function


def test_workflow_events_carry_what_their_steps_read() -> None:
    stream = load("conversation_stream.json")
    parse(stream, DynamoDBStreamModel)  # the event, as Lambda's mapping delivers it
    (record,) = stream["Records"]
    change = StreamChange.from_record(ConversationStreamRecord.model_validate(record))
    assert change.event_name == "INSERT" and change.new is not None and change.old is None
    assert change.new.conversation_status == "STARTING"
    conversation_id = change.new.conversation_id

    steps = {
        "initialize_context.json": InitializeContextInput,
        "launch_sandbox.json": LaunchSandboxInput,
        "mark_running.json": MarkRunningInput,
        "record_failure.json": RecordFailureInput,
    }
    for name, model in steps.items():
        step = step_input(load(name), model)
        assert (step.conversation_id, run_of_execution(conversation_id, step.execution_name)) == (conversation_id, 1)
    failure = step_input(load("record_failure.json"), RecordFailureInput).error
    assert failure.Error == "SETUP_SCRIPT_FAILED" and isinstance(failure.Cause, str)
    assert json.loads(failure.Cause)["message"]


def test_the_event_sources_samples_parse_with_the_handlers_models() -> None:
    intake = load("event_intake.json")
    parse(intake, SqsModel)
    (message,) = intake["Records"]
    queued = QueuedEvent.model_validate_json(CreateConversationMessage.model_validate(message).body)
    assert queued.detail_type == "CreateConversation"
    CreateConversationDetail.model_validate(queued.detail)
    stopped = parse(load("sandbox_watch.json"), EcsTaskStateChange)
    assert stopped.detail.lastStatus == "STOPPED" and stopped.detail.exit_code == 137


def test_sandbox_api_events_are_proxy_events_for_its_routes() -> None:
    context = APIGatewayProxyEvent(load("sandbox_api_context.json"))
    assert (context.http_method, context.path) == ("GET", "/sandbox/v1/context")
    report = APIGatewayProxyEvent(load("sandbox_api_event.json"))
    assert (report.http_method, report.path) == ("POST", "/sandbox/v1/events")
    SandboxEvent.model_validate_json(report.body or "")
    for event in (context, report):
        assert event.headers["Authorization"].startswith("Bearer ")
        assert "authorizer" not in event.raw_event["requestContext"], "the sandbox API has no API-key authorizer"


def test_the_pool_events_feed_their_handlers_models() -> None:
    idle = APIGatewayProxyEvent(load("sandbox_pool_idle.json"))
    assert (idle.http_method, idle.path) == ("POST", "/sandbox/v1/pool/idle")
    assert idle.headers["Authorization"].startswith("Bearer ")
    PoolIdleReport.model_validate_json(idle.body or "")
    schedule = load("pool_reconciler.json")
    assert schedule["detail-type"] == "Scheduled Event" and schedule["source"] == "aws.events"
