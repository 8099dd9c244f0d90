"""The template wires the lifecycle: the stream consumer reads every change and may do exactly
what teardown needs; the event intake function cannot touch the workflow or the sandboxes."""

from __future__ import annotations

import json
from typing import Any

from devstack.template_resources import load_template


def function(name: str) -> dict[str, Any]:
    return dict(load_template()["Resources"][name]["Properties"])


def statements(properties: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for policy in properties["Policies"] if "Statement" in policy for item in policy["Statement"]]


def statement_actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def actions(properties: dict[str, Any]) -> set[str]:
    return {action for statement in statements(properties) for action in statement_actions(statement)}


def templates(properties: dict[str, Any]) -> set[str]:
    return {name for policy in properties["Policies"] for name in policy if name != "Statement"}


def test_the_conversation_stream_reads_every_change() -> None:
    stream = function("ConversationStreamFunction")
    source = stream["Events"]["ConversationChanges"]["Properties"]
    assert "FilterCriteria" not in source  # MODIFY and REMOVE drive teardown and events
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert source["DestinationConfig"]["OnFailure"]["Type"] == "SQS"
    assert set(stream["Environment"]["Variables"]) == {"STATE_MACHINE_ARN", "SANDBOX_CLUSTER_ARN", "EVENT_BUS_NAME"}


def test_the_conversation_stream_may_do_what_teardown_needs_and_no_more() -> None:
    stream = function("ConversationStreamFunction")
    assert actions(stream) == {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",  # a deleted conversation's channel: its items
        "dynamodb:BatchWriteItem",  # and their deletion
        "sqs:SendMessage",
        "states:StopExecution",
        "ecs:StopTask",
        "ecs:ListTasks",
        "s3:ListBucketVersions",
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
    }
    by_action = {action: statement for statement in statements(stream) for action in statement_actions(statement)}
    assert ":execution:${ConversationWorkflow.Name}:*" in json.dumps(by_action["states:StopExecution"]["Resource"])
    cluster = {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["SandboxCluster", "Arn"]}}}
    assert by_action["ecs:StopTask"]["Condition"] == by_action["ecs:ListTasks"]["Condition"] == cluster
    assert "conversations/*" in json.dumps(by_action["s3:DeleteObjectVersion"]["Resource"])
    assert "conversation-events/*" in json.dumps(by_action["s3:DeleteObjectVersion"]["Resource"])  # the channel
    assert by_action["s3:ListBucketVersions"]["Condition"] == {
        "StringLike": {"s3:prefix": ["conversations/*", "conversation-events/*"]}
    }
    assert "EventBridgePutEventsPolicy" in templates(stream)
    assert "S3CrudPolicy" not in templates(stream)


def test_the_event_intake_function_only_creates() -> None:
    intake = function("EventIntakeFunction")
    assert not {action for action in actions(intake) if action.split(":")[0] in {"states", "ecs", "events"}}
    assert "sqs:SendMessage" in actions(intake)
    assert "StepFunctionsExecutionPolicy" not in templates(intake)
    # It seals an event's MCP servers, bound to the user: Encrypt only with an owner context.
    sealing = [statement for statement in statements(intake) if "kms:Encrypt" in statement_actions(statement)]
    assert sealing and all("kms:EncryptionContext:owner" in json.dumps(s["Condition"]) for s in sealing)


def test_the_bus_and_its_consumers() -> None:
    resources = load_template()["Resources"]
    assert resources["ConversationEventBus"]["Type"] == "AWS::Events::EventBus"
    bus_name = resources["ConversationEventBus"]["Properties"]["Name"]
    assert function("ConversationStreamFunction")["Environment"]["Variables"]["EVENT_BUS_NAME"] == bus_name
    assert load_template()["Parameters"]["TrustedEventSources"]["Type"] == "CommaDelimitedList"
