"""What the template gives the warm pool: off by default, its table and functions, the offline
model price list in the task, the operators' view (dashboard, cold-share alarm)."""

from __future__ import annotations

import json

from devstack.template_resources import load_template

TEMPLATE = load_template()
RESOURCES = TEMPLATE["Resources"]


def test_the_pool_is_off_by_default_and_reconciled_every_minute() -> None:
    assert TEMPLATE["Parameters"]["PoolTargetIdle"]["Default"] == 0
    events = RESOURCES["PoolReconcilerFunction"]["Properties"]["Events"]
    assert [e["Properties"]["Schedule"] for e in events.values() if e["Type"] == "Schedule"] == ["rate(1 minute)"]
    assert RESOURCES["PoolReconcilerFunction"]["Properties"]["ReservedConcurrentExecutions"] == 1
    index = RESOURCES["SandboxPoolTable"]["Properties"]["GlobalSecondaryIndexes"][0]
    assert index["IndexName"] == "ByLiveState"


def test_the_sandbox_uses_litellm_s_bundled_price_list() -> None:
    (container,) = RESOURCES["SandboxTaskDefinition"]["Properties"]["ContainerDefinitions"]
    environment = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert environment["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


def test_operators_see_the_pool_and_are_told_when_most_starts_are_cold() -> None:
    body = RESOURCES["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for name in ("${AWS::Region}", "${AWS::StackName}", "${Environment}", "${ConversationWorkflow}"):
        body = body.replace(name, "x")
    widgets = json.loads(body)["widgets"]
    metrics = {m for w in widgets for row in w["properties"]["metrics"] for m in row if isinstance(m, str)}
    assert {
        "SandboxStarts",
        "PoolIdleSandboxes",
        "PoolOldestIdleAge",
        "PoolClaimLatency",
        "TimeToRunningByStart",
    } <= metrics
    alarm = RESOURCES["PoolColdShareAlarm"]
    assert alarm["Condition"] == "HasPool"
    watched = {m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Properties"]["Metrics"] if "MetricStat" in m}
    assert watched == {"SandboxStarts"}
