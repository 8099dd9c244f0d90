"""POST .../stop in every phase of the workflow: the conversation is STOPPED with its slot freed at
once, and the stream consumer leaves nothing running: no execution, no sandbox task."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conversation_service.logic.workflow import CreationWorkflow

from tests.lifecycle.conftest import CONVERSATIONS, USER, Lifecycle, lifecycle_stack


def stop(life: Lifecycle, conversation_id: str) -> dict[str, Any]:
    status, body = life.call("POST", f"{CONVERSATIONS}/{conversation_id}/stop")
    assert status == 200, body
    return dict(body)


def assert_nothing_runs(life: Lifecycle, conversation_id: str) -> None:
    life.wait_for(lambda: not life.tasks(conversation_id, "RUNNING"), what="every task to be stopped")
    view = life.view(conversation_id)
    assert (view["conversation_status"], view["runtime_status"]) == ("STOPPED", "STATUS$STOPPED")
    assert view["status_reason"] == "CONVERSATION$STOPPED_BY_USER"
    assert life.active_count() == 0


def test_stop_before_the_workflow_began(life: Lifecycle) -> None:
    conversation_id = life.create()
    assert stop(life, conversation_id)["conversation_status"] == "STOPPED"
    assert life.active_count() == 0  # at once, not when the stream catches up
    life.settle()
    assert life.execution_status(conversation_id) is None  # the INSERT started nothing
    assert life.tasks(conversation_id) == []
    assert_nothing_runs(life, conversation_id)


@pytest.fixture
def gated_initialize_context(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """InitializeContext waits at its door until released."""
    entered, release = threading.Event(), threading.Event()
    original = CreationWorkflow.initialize_context

    def gated(self: CreationWorkflow, conversation_id: str, run: int | None = None) -> dict[str, str]:
        entered.set()
        release.wait(20)
        return original(self, conversation_id, run)

    monkeypatch.setattr(CreationWorkflow, "initialize_context", gated)
    yield entered, release
    release.set()


def test_stop_before_initialize_context_ran(
    life: Lifecycle, gated_initialize_context: tuple[threading.Event, threading.Event]
) -> None:
    entered, release = gated_initialize_context
    conversation_id = life.create()
    life.wait_for(entered.is_set, what="the workflow to reach InitializeContext")
    assert life.execution_status(conversation_id) == "RUNNING"
    stop(life, conversation_id)
    life.pump()  # the consumer handles the change: it stops the execution
    assert life.stopped_executions == [conversation_id]
    release.set()
    # AWS shows ABORTED at once and runs nothing more; moto, whose step is still in flight, lets
    # the step fail into RecordFailure, which finds the conversation closed and changes nothing.
    life.wait_for(lambda: life.execution_status(conversation_id) not in (None, "RUNNING"), what="the execution end")
    life.settle(0.5)
    assert life.tasks(conversation_id) == []  # no sandbox was ever launched
    s3 = life.session.client("s3")
    listing = s3.list_objects_v2(Bucket=life.resources.physical["ContextBucket"], Prefix="conversations/")
    assert listing.get("KeyCount", 0) == 0  # the late step wrote no context either
    assert_nothing_runs(life, conversation_id)


def test_stop_while_waiting_for_the_sandbox(life: Lifecycle) -> None:
    conversation_id = life.create()
    token = life.sandbox_token(conversation_id)
    assert life.sandbox("GET", "/sandbox/v1/context", token)[0] == 200
    assert life.view(conversation_id)["runtime_status"] == "STATUS$STARTING_RUNTIME"
    stop(life, conversation_id)
    life.pump()
    assert life.stopped_executions == [conversation_id]
    (task,) = life.tasks(conversation_id)
    assert task["desiredStatus"] == "STOPPED" and task["stoppedReason"] == "conversation stopped"
    # The sandbox is told to go: its reports are refused.
    assert life.sandbox("POST", "/sandbox/v1/events", token, {"type": "heartbeat"})[0] == 409
    assert_nothing_runs(life, conversation_id)


def test_stop_after_running(life: Lifecycle) -> None:
    conversation_id = life.create()
    life.drive_to_running(conversation_id)
    life.wait_for(lambda: life.execution_status(conversation_id) == "SUCCEEDED", what="the execution to end")
    assert life.active_count() == 1
    body = stop(life, conversation_id)
    assert body == {
        "status": "ok",
        "conversation_id": conversation_id,
        "message": "Conversation stopped",
        "conversation_status": "STOPPED",
    }
    life.wait_for(lambda: life.tasks(conversation_id)[0]["desiredStatus"] == "STOPPED", what="the task stopped")
    assert life.execution_status(conversation_id) == "SUCCEEDED"
    assert life.stopped_executions == []  # it had ended: nothing to stop
    assert_nothing_runs(life, conversation_id)


def test_stop_is_safe_to_repeat_and_keeps_an_error(life: Lifecycle) -> None:
    conversation_id = life.create()
    life.drive_to_running(conversation_id)
    stop(life, conversation_id)
    again = stop(life, conversation_id)
    assert again["conversation_status"] == "STOPPED" and again["message"] == "Conversation was not running"
    life.settle()
    assert_nothing_runs(life, conversation_id)
    stopped = [e for e in life.published() if e["detail"]["new_status"] == "STOPPED"]
    assert len(stopped) == 1  # stopping again publishes nothing: the status did not change

    failing = life.create()
    token = life.sandbox_token(failing)
    report = {"type": "failed", "error_code": "CLONE_FAILED", "message": "could not clone"}
    assert life.sandbox("POST", "/sandbox/v1/events", token, report)[0] == 200
    life.wait_status(failing, "ERROR")
    assert stop(life, failing)["conversation_status"] == "ERROR"
    view = life.view(failing)
    assert (view["conversation_status"], view["error_code"]) == ("ERROR", "CLONE_FAILED")
    life.wait_for(lambda: not life.tasks(failing, "RUNNING"), what="the failed run's task stopped")


def test_the_concurrency_policy_victim_has_its_sandbox_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    with lifecycle_stack(monkeypatch, {"MaxActiveConversations": "1"}) as life:
        life.configure(USER)
        running = life.create()
        life.drive_to_running(running)
        starting = life.create()  # closes `running`
        victim = life.view(running)
        assert victim["conversation_status"] == "STOPPED"
        assert victim["status_reason"] == "AGENT_ERROR$TOO_MANY_CONVERSATIONS"
        life.wait_for(lambda: life.tasks(running)[0]["desiredStatus"] == "STOPPED", what="the victim's task stopped")
        life.running_task(starting)  # the new one got its own sandbox
        newest = life.create()  # closes `starting`, which was still waiting for its sandbox
        life.wait_for(lambda: not life.tasks(starting, "RUNNING"), what="the starting victim's task stopped")
        assert starting in life.stopped_executions
        life.running_task(newest)
        assert life.active_count() == 1
