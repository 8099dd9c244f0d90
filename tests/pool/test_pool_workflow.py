"""The warm pool through the real workflow: a claim, a sandbox that then runs as a cold one, the
pool's credential, deaths and retirements, and a pool of 0 that behaves as before."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conversation_service import services
from conversation_service.dal.sandboxes import SandboxFleet
from conversation_service.logic.start_hops import SERVICE_HOPS

from tests.integration.conftest import WorkflowHarness
from tests.pool.support import (
    boot,
    fill,
    pool_call,
    pool_harness,
    pool_items,
    pool_task,
    reconcile,
    task_stopped_event,
)
from tests.reliability.conftest import GIT_TOKEN, LLM_KEY
from tests.reliability.workflow_support import READY, SANDBOX_PHASES, report, settle, start

pytestmark = pytest.mark.usefixtures("moto")
SESSION_KEY = "warm-session-key-made-by-the-sandbox-0123456789"


def claimed_item(harness: WorkflowHarness, conversation_id: str) -> dict[str, Any]:
    return dict(
        harness.wait_for(
            lambda: next((i for i in pool_items(harness) if i.get("conversation_id") == conversation_id), None),
            what="a pool sandbox claimed by the conversation",
        )
    )


def take_assignment(harness: WorkflowHarness, credential: str) -> dict[str, str]:
    status, body = pool_call(harness, "GET", "/sandbox/v1/pool/assignment", credential, query={"wait": "5"})
    assert status == 200, body
    assert body["assignment"] is not None, body
    return dict(body["assignment"])


def wait_for_task_submitted(harness: WorkflowHarness, conversation_id: str) -> None:
    harness.wait_for(
        lambda: any(event["type"] == "TaskSubmitted" for event in harness.history(conversation_id)),
        what="the launch step to submit its task",
    )


def run_assigned(harness: WorkflowHarness, conversation_id: str, token: str, ready: dict[str, Any]) -> None:
    wait_for_task_submitted(harness, conversation_id)
    for phase in SANDBOX_PHASES:
        assert report(harness, token, {"type": "phase", "phase": phase}) == 200
        if phase == "STATUS$RUNTIME_STARTED":
            status, context = harness.sandbox("GET", "/sandbox/v1/context", token)
            assert status == 200 and context["conversation_id"] == conversation_id
    assert report(harness, token, ready) == 200


def assert_start_hops(view: dict[str, Any], sandbox_steps: list[str]) -> None:
    """Every service hop, in order, adding up to the timeline's QUEUED -> READY; then the sandbox's."""
    hops = view["start_hops"]
    service = [hop for hop in hops if hop["measured_by"] == "service"]
    assert [hop["hop"] for hop in service] == list(SERVICE_HOPS)
    assert hops[: len(service)] == service and all(hop["milliseconds"] >= 0 for hop in hops)
    assert [hop["hop"] for hop in hops[len(service) :]] == sandbox_steps
    timeline = {entry["phase"]: datetime.fromisoformat(entry["at"]) for entry in view["timeline"]}
    queued_to_ready = (timeline["STATUS$READY"] - timeline["STATUS$QUEUED"]).total_seconds() * 1000
    assert abs(sum(hop["milliseconds"] for hop in service) - queued_to_ready) <= len(service)


def test_a_create_claims_an_idle_sandbox_that_then_runs_as_a_cold_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    harness = pool_harness(monkeypatch, target=1)
    ((sandbox_id, credential),) = fill(harness).items()
    conversation_id = start(harness, tmp_path)

    item = claimed_item(harness, conversation_id)
    assert item["sandbox_id"] == sandbox_id and item["pool_status"] == "CLAIMED"
    assignment = take_assignment(harness, credential)
    # Exactly what a cold task would have had in RunTask; no cold task was started.
    assert assignment["CONVERSATION_ID"] == conversation_id
    assert set(assignment) >= {"CONVERSATION_ID", "SANDBOX_API_URL"}
    assert harness.sandbox_task(conversation_id) is None
    token = harness.open_assigned_token(assignment)
    # Given out of order: the view lists them in the order the sandbox runs them.
    timings = {"clone": 0.5, "assignment_to_start": 0.01, "conversation_create": 0.25, "context_fetch": 0.1}
    run_assigned(harness, conversation_id, token, {**READY, "session_api_key": SESSION_KEY, "timings": timings})

    view = settle(harness, conversation_id)
    assert view["conversation_status"] == "RUNNING" and view["start"] == "warm", view
    assert_start_hops(view, ["assignment_to_start", "context_fetch", "clone", "conversation_create"])
    assert [hop["milliseconds"] for hop in view["start_hops"] if hop["measured_by"] == "sandbox"] == [10, 100, 500, 250]
    conversation = services.conversation_store().get(conversation_id, consistent=True)
    assert conversation is not None and conversation.task_arn == pool_task(harness, sandbox_id)["taskArn"]
    # The session key the sandbox made is the one on record (sealed), and never in the history.
    assert conversation.sealed_session_api_key
    opened = services.user_store().open_for(conversation.user_id, conversation.sealed_session_api_key)
    assert opened == {"session_api_key": SESSION_KEY}
    history = str(harness.history(conversation_id))
    for secret in (SESSION_KEY, credential, token, LLM_KEY, GIT_TOKEN):
        assert secret not in history
    # The assignment is handed over once; the item keeps no copy of it.
    assert pool_call(harness, "GET", "/sandbox/v1/pool/assignment", credential, query={"wait": "0"})[0] == 410
    assert "assignment" not in claimed_item(harness, conversation_id)


def test_a_pool_of_zero_behaves_as_before(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    harness = pool_harness(monkeypatch, target=0)
    # moto's tasks carry no phase timestamps: what ECS's DescribeTasks would answer stands in here.
    ecs_phases = {"createdAt": datetime(2026, 1, 1, tzinfo=UTC), "startedAt": datetime(2026, 1, 1, 0, 1, tzinfo=UTC)}
    monkeypatch.setattr(SandboxFleet, "phase_timestamps", lambda self, task_arn: dict(ecs_phases))
    assert reconcile(harness)["launched"] == []
    conversation_id = start(harness, tmp_path)
    token = harness.open_sandbox_token(conversation_id)  # a cold RunTask, as before
    run_assigned(harness, conversation_id, token, READY)
    view = settle(harness, conversation_id)
    assert view["conversation_status"] == "RUNNING" and view["start"] == "cold"
    assert_start_hops(view, [])  # a ready without timings (an older sandbox): the service's hops only
    assert pool_items(harness) == []
    # A cold start records the task's own phase timestamps.
    assert view["task_timestamps"] == {
        "createdAt": "2026-01-01T00:00:00+00:00",
        "startedAt": "2026-01-01T00:01:00+00:00",
    }


def test_without_an_idle_sandbox_the_start_is_cold(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    harness = pool_harness(monkeypatch, target=1)
    (sandbox_id,) = reconcile(harness)["launched"]  # launching, not yet idle: not claimable
    conversation_id = start(harness, tmp_path)
    token = harness.open_sandbox_token(conversation_id)
    run_assigned(harness, conversation_id, token, READY)
    assert settle(harness, conversation_id)["start"] == "cold"
    assert {i["sandbox_id"]: i["pool_status"] for i in pool_items(harness)} == {sandbox_id: "LAUNCHING"}


def test_an_idle_sandbox_that_dies_is_replaced_and_never_claimed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    harness = pool_harness(monkeypatch, target=1)
    ((sandbox_id, _),) = fill(harness).items()
    task = pool_task(harness, sandbox_id)
    harness.session.client("ecs").stop_task(cluster=task["clusterArn"], task=task["taskArn"], reason="crashed")
    outcome = harness.runtime.invoke("SandboxWatchFunction", task_stopped_event(harness, task))
    assert outcome == {"outcome": "pool-sandbox-ended"}
    assert {i["sandbox_id"]: i["pool_status"] for i in pool_items(harness)} == {sandbox_id: "DEAD"}

    conversation_id = start(harness, tmp_path)
    token = harness.open_sandbox_token(conversation_id)
    run_assigned(harness, conversation_id, token, READY)
    assert settle(harness, conversation_id)["start"] == "cold"
    (replacement,) = reconcile(harness)["launched"]
    assert replacement != sandbox_id
    assert all(i.get("conversation_id") is None for i in pool_items(harness))


def test_a_claimed_sandbox_that_dies_fails_its_conversation_as_any_sandbox(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    harness = pool_harness(monkeypatch, target=2)
    credentials = fill(harness)
    starting = start(harness, tmp_path)
    running = start(harness, tmp_path)
    for conversation_id in (starting, running):
        claimed_item(harness, conversation_id)
    assignments = {a["CONVERSATION_ID"]: a for a in (take_assignment(harness, c) for c in credentials.values())}
    run_assigned(harness, running, harness.open_assigned_token(assignments[running]), READY)
    assert settle(harness, running)["conversation_status"] == "RUNNING"
    wait_for_task_submitted(harness, starting)
    starting_token = harness.open_assigned_token(assignments[starting])
    assert report(harness, starting_token, {"type": "phase", "phase": SANDBOX_PHASES[0]}) == 200

    for conversation_id in (starting, running):
        task = pool_task(harness, claimed_item(harness, conversation_id)["sandbox_id"])
        assert harness.runtime.invoke("SandboxWatchFunction", task_stopped_event(harness, task))["outcome"] in (
            "closed",
            "workflow-failed",
        )
    for conversation_id in (starting, running):
        view = settle(harness, conversation_id)
        assert (view["conversation_status"], view["error_code"]) == ("ERROR", "RUNTIME_UNHEALTHY"), view


def test_outdated_old_silent_and_surplus_sandboxes_are_retired_never_claimed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    harness = pool_harness(monkeypatch, target=3)
    credentials = fill(harness)
    silent, old, kept = sorted(credentials)
    dynamodb = harness.session.client("dynamodb")
    table = harness.resources.physical["SandboxPoolTable"]
    long_ago = {"N": "1000"}
    dynamodb.update_item(
        TableName=table,
        Key={"sandbox_id": {"S": silent}},
        UpdateExpression="SET heartbeat_at = :t",
        ExpressionAttributeValues={":t": long_ago},
    )
    dynamodb.update_item(
        TableName=table,
        Key={"sandbox_id": {"S": old}},
        UpdateExpression="SET idle_since = :t",
        ExpressionAttributeValues={":t": long_ago},
    )
    report_ = reconcile(harness)
    assert report_["retired"] == {
        silent: "stopped polling for its assignment",
        old: "idle longer than PoolMaxIdleSeconds",
    }
    replacements = report_["launched"]
    assert len(replacements) == 2
    for sandbox_id in (silent, old):
        assert pool_task(harness, sandbox_id)["desiredStatus"] == "STOPPED"
        assert pool_call(harness, "GET", "/sandbox/v1/pool/assignment", credentials[sandbox_id])[0] == 410

    # A new task definition revision: every sandbox on the old one goes, none is claimed.
    ecs = harness.session.client("ecs")
    definition = ecs.describe_task_definition(taskDefinition=services.get_config().sandbox_task_definition_arn)
    fields = ("family", "networkMode", "requiresCompatibilities", "cpu", "memory", "containerDefinitions")
    revision = ecs.register_task_definition(**{k: definition["taskDefinition"][k] for k in fields})
    monkeypatch.setenv("SANDBOX_TASK_DEFINITION_ARN", revision["taskDefinition"]["taskDefinitionArn"])
    services.reset()
    conversation_id = start(harness, tmp_path)
    harness.sandbox_environment(conversation_id)  # cold: nothing claimable on the current revision
    report_ = reconcile(harness)
    assert report_["retired"] == dict.fromkeys([kept, *replacements], "on an outdated task definition")
    assert len(report_["launched"]) == 3
    assert all(i.get("conversation_id") is None for i in pool_items(harness))

    # The target goes down: the surplus is retired.
    for sandbox_id in report_["launched"]:
        boot(harness, sandbox_id)
    monkeypatch.setenv("POOL_TARGET_IDLE", "1")
    services.reset()
    report_ = reconcile(harness)
    assert len(report_["retired"]) == 2 and set(report_["retired"].values()) == {"more than PoolTargetIdle"}
    assert report_["idle"] == 1 and report_["launched"] == []
