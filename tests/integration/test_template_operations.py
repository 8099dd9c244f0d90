"""The stack carries its own observability: logs with retention, access logs, tracing, alarms
routed to the operator's topic, and a dashboard (docs/operations.md explains each)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.template_resources import load_template

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = sorted(name for name, spec in RESOURCES.items() if spec["Type"] == "AWS::Serverless::Function")
ALARMS = {name: spec["Properties"] for name, spec in RESOURCES.items() if spec["Type"] == "AWS::CloudWatch::Alarm"}


def _refs(value: Any) -> set[str]:
    """Every logical id that `value` refers to (Ref, GetAtt, ${...} in Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0] if isinstance(item, list) else item.split(".")[0])
            elif key == "Fn::Sub":
                text = item if isinstance(item, str) else item[0]
                found |= {part.split("}")[0].split(".")[0] for part in text.split("${")[1:]}
            found |= _refs(item)
    elif isinstance(value, list):
        for item in value:
            found |= _refs(item)
    return found


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_has_a_log_group_with_retention(function: str) -> None:
    group = RESOURCES[f"{function}LogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_tracing_is_on_for_functions_api_and_workflow() -> None:
    assert TEMPLATE["Globals"]["Function"]["Tracing"] == "Active"
    assert RESOURCES["Api"]["Properties"]["TracingEnabled"] is True
    assert RESOURCES["ConversationWorkflow"]["Properties"]["Tracing"]["Enabled"] is True


def test_api_access_logs_and_workflow_logs_have_retention() -> None:
    access = RESOURCES["Api"]["Properties"]["AccessLogSetting"]
    assert _refs(access["DestinationArn"]) == {"ApiAccessLogGroup"}
    assert "RetentionInDays" in RESOURCES["ApiAccessLogGroup"]["Properties"]
    assert RESOURCES["Api"]["DependsOn"] == "ApiGatewayAccount"
    logging = RESOURCES["ConversationWorkflow"]["Properties"]["Logging"]
    assert logging["IncludeExecutionData"] is False  # no execution data (and so no payloads) in logs
    assert _refs(logging["Destinations"]) == {"WorkflowLogGroup"}
    assert "RetentionInDays" in RESOURCES["WorkflowLogGroup"]["Properties"]


def test_every_alarm_notifies_the_operators_topic() -> None:
    assert ALARMS
    for name, alarm in ALARMS.items():
        assert "AlarmTopicArn" in _refs(alarm["AlarmActions"]), name
        assert "docs/operations.md#" in alarm["AlarmDescription"], name


def _alarm_watching(namespace: str, metric: str) -> list[dict[str, Any]]:
    matches = []
    for alarm in ALARMS.values():
        stats = [alarm] + [query["MetricStat"]["Metric"] for query in alarm.get("Metrics", []) if "MetricStat" in query]
        if any(item.get("Namespace") == namespace and item.get("MetricName") == metric for item in stats):
            matches.append(alarm)
    return matches


@pytest.mark.parametrize(
    ("namespace", "metric", "target"),
    [
        ("AWS/ApiGateway", "5XXError", None),
        ("AWS/DynamoDB", "ThrottledRequests", "ConversationsTable"),
        ("AWS/DynamoDB", "ThrottledRequests", "UsersTable"),
        ("AWS/States", "ExecutionsFailed", "ConversationWorkflow"),
        ("AWS/States", "ExecutionsTimedOut", "ConversationWorkflow"),
        ("OpenHandsConversations", "ConversationErrors", None),
    ],
)
def test_alarms_watch_the_right_targets(namespace: str, metric: str, target: str | None) -> None:
    alarms = _alarm_watching(namespace, metric)
    assert alarms, f"no alarm on {namespace}/{metric}"
    if target:
        assert any(target in _refs(alarm) for alarm in alarms)


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_lambda_alarms_cover_every_function(metric: str) -> None:
    (alarm,) = _alarm_watching("AWS/Lambda", metric)
    assert _refs(alarm["Metrics"]) >= set(FUNCTIONS)


def test_the_dashboard_shows_what_operators_watch_and_its_url_is_an_output() -> None:
    body = RESOURCES["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body.replace("${AWS::Region}", "r").replace("${AWS::StackName}", "s"))["widgets"]
    metrics = {
        metric
        for widget in widgets
        for row in widget["properties"]["metrics"]
        for metric in row
        if isinstance(metric, str)
    }
    for expected in (
        "ConversationsCreated",
        "TimeToRunning",
        "PhaseDuration",
        "ConversationErrorsByCode",
        "CreateRejections",
    ):
        assert expected in metrics
    name = RESOURCES["OperationsDashboard"]["Properties"]["DashboardName"]["Fn::Sub"]
    assert f"dashboards:name={name}" in TEMPLATE["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]


def test_a_stopped_sandbox_task_reaches_the_watch_function() -> None:
    events = RESOURCES["SandboxWatchFunction"]["Properties"]["Events"]
    (rule,) = events.values()
    pattern = rule["Properties"]["Pattern"]
    assert pattern["source"] == ["aws.ecs"] and pattern["detail"]["lastStatus"] == ["STOPPED"]
    assert _refs(pattern["detail"]["clusterArn"]) == {"SandboxCluster"}


def test_the_sandbox_task_role_has_no_permissions() -> None:
    role = RESOURCES["SandboxTaskRole"]["Properties"]
    assert "Policies" not in role and "ManagedPolicyArns" not in role
