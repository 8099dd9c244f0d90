"""POST .../start: a STOPPED or ERROR conversation starts again as its next run, through the same
workflow (execution `<id>-<run>`), under the same limit and policy as a creation."""

from __future__ import annotations

from pathlib import Path

import pytest
from conversation_service import services
from conversation_service.logic.clock import now_iso
from conversation_service.models.context import SandboxReady
from conversation_service.models.domain import ConversationStatus
from conversation_service.models.errors import ConversationNotStarting
from conversation_service.models.workflow_steps import StepFailure

from tests.lifecycle.conftest import CONVERSATIONS, FIRST_MESSAGE, USER, Lifecycle, lifecycle_stack


def start(life: Lifecycle, conversation_id: str) -> tuple[int, dict[str, object]]:
    return life.call("POST", f"{CONVERSATIONS}/{conversation_id}/start")


def test_start_after_stop_prepares_the_workspace_again(life: Lifecycle, repository: Path) -> None:
    conversation_id = life.create({"repository": str(repository), "initial_user_msg": FIRST_MESSAGE})
    first_token = life.sandbox_token(conversation_id)
    first_context = life.drive_to_running(conversation_id)
    assert first_context["first_message"]["text"] == FIRST_MESSAGE
    assert life.call("POST", f"{CONVERSATIONS}/{conversation_id}/stop")[0] == 200
    life.wait_for(lambda: not life.tasks(conversation_id, "RUNNING"), what="run 1's task stopped")

    status, body = start(life, conversation_id)
    assert (status, body["conversation_status"], body["message"]) == (200, "STARTING", "Conversation starting")
    assert life.active_count() == 1
    life.wait_for(lambda: life.execution_status(f"{conversation_id}-2") is not None, what="run 2's execution")
    assert life.execution_status(conversation_id) == "SUCCEEDED"  # run 1's, named as before
    second_token = life.sandbox_token(conversation_id)  # a new task, with a new token
    assert second_token != first_token
    assert life.sandbox("GET", "/sandbox/v1/context", first_token)[0] == 401
    second_context = life.drive_to_running(conversation_id)
    assert second_context["first_message"] is None  # resumed: the first message is not sent again
    assert second_context["workspace_branch"] == first_context["workspace_branch"] is not None
    assert second_context["repository"]["commit"] == first_context["repository"]["commit"]
    view = life.view(conversation_id)
    assert [entry["phase"] for entry in view["timeline"]][:3] == [
        "STATUS$QUEUED",
        "STATUS$INITIALIZING_CONTEXT",
        "STATUS$STARTING_RUNTIME",
    ]
    assert view["runtime_status"] == "STATUS$READY" and view["status_reason"] is None
    life.wait_for(lambda: life.execution_status(f"{conversation_id}-2") == "SUCCEEDED", what="run 2 ended")
    # Run 3 after another stop.
    assert life.call("POST", f"{CONVERSATIONS}/{conversation_id}/stop")[0] == 200
    assert start(life, conversation_id)[0] == 200
    life.wait_for(lambda: life.execution_status(f"{conversation_id}-3") is not None, what="run 3's execution")


def test_start_after_an_error_clears_it(life: Lifecycle) -> None:
    conversation_id = life.create()
    token = life.sandbox_token(conversation_id)
    failure = {"type": "failed", "error_code": "SETUP_SCRIPT_FAILED", "message": "setup.sh exited with 2"}
    assert life.sandbox("POST", "/sandbox/v1/events", token, failure)[0] == 200
    life.wait_status(conversation_id, "ERROR")
    assert start(life, conversation_id)[0] == 200
    view = life.view(conversation_id)
    assert (view["conversation_status"], view["error_code"], view["error_message"]) == ("STARTING", None, None)
    life.drive_to_running(conversation_id)


def test_start_of_an_active_conversation_changes_nothing(life: Lifecycle) -> None:
    conversation_id = life.create()
    status, body = start(life, conversation_id)
    assert (status, body["conversation_status"], body["message"]) == (
        200,
        "STARTING",
        "Conversation is already active",
    )
    life.running_task(conversation_id)
    assert life.execution_status(f"{conversation_id}-2") is None
    assert life.active_count() == 1


def test_start_needs_usable_settings(life: Lifecycle) -> None:
    conversation_id = life.create()
    assert life.call("POST", f"{CONVERSATIONS}/{conversation_id}/stop")[0] == 200
    assert life.call("POST", "/api/settings", {"llm_api_key": ""})[0] == 200  # the key removed
    status, body = start(life, conversation_id)
    assert (status, body["msg_id"]) == (400, "STATUS$ERROR_LLM_AUTHENTICATION"), body
    assert life.view(conversation_id)["conversation_status"] == "STOPPED"


def test_start_at_the_limit_with_the_reject_policy_is_429(monkeypatch: pytest.MonkeyPatch) -> None:
    with lifecycle_stack(monkeypatch, {"MaxActiveConversations": "1", "ConcurrencyPolicy": "reject"}) as life:
        life.configure(USER)
        stopped = life.create()
        assert life.call("POST", f"{CONVERSATIONS}/{stopped}/stop")[0] == 200
        life.create()
        status, body = start(life, stopped)
        assert (status, body["msg_id"], body["limit"], body["current"]) == (429, "CONCURRENCY_LIMIT_REACHED", 1, 1)
        assert life.view(stopped)["conversation_status"] == "STOPPED"
        assert life.active_count() == 1


def test_start_at_the_limit_closes_the_least_recently_active(monkeypatch: pytest.MonkeyPatch) -> None:
    with lifecycle_stack(monkeypatch, {"MaxActiveConversations": "1"}) as life:
        life.configure(USER)
        stopped = life.create()
        assert life.call("POST", f"{CONVERSATIONS}/{stopped}/stop")[0] == 200
        running = life.create()
        life.drive_to_running(running)
        assert start(life, stopped)[0] == 200
        victim = life.view(running)
        assert (victim["conversation_status"], victim["status_reason"]) == (
            "STOPPED",
            "AGENT_ERROR$TOO_MANY_CONVERSATIONS",
        )
        life.wait_for(lambda: not life.tasks(running, "RUNNING"), what="the victim's task stopped")
        life.running_task(stopped)
        assert life.active_count() == 1


def test_an_older_run_cannot_touch_the_current_one(life: Lifecycle) -> None:
    """A step of run 1 that finishes late (its execution was stopped) finds run 2 and does nothing."""
    conversation_id = life.create()
    life.running_task(conversation_id)
    assert life.call("POST", f"{CONVERSATIONS}/{conversation_id}/stop")[0] == 200
    assert start(life, conversation_id)[0] == 200
    life.running_task(conversation_id)  # run 2's
    before = life.view(conversation_id)
    workflow = services.creation_workflow()
    with pytest.raises(ConversationNotStarting):
        workflow.launch_sandbox(conversation_id, "stale-token", run=1)
    with pytest.raises(ConversationNotStarting):
        workflow.initialize_context(conversation_id, run=1)
    assert workflow.record_failure(conversation_id, StepFailure(Error="States.Timeout"), run=1) == {
        "error_code": "STOPPED"
    }
    ready = SandboxReady(agent_server_url="http://10.0.0.1:8000", agent_conversation_id="old")
    assert workflow.mark_running(conversation_id, ready, run=1) == {"conversation_status": "STARTING"}
    assert life.view(conversation_id) == before
    assert len(life.tasks(conversation_id, "RUNNING")) == 1


def test_only_stopped_or_failed_conversations_start(life: Lifecycle) -> None:
    conversation_id = life.create()
    store = services.conversation_store()
    assert store.deactivate(conversation_id, USER, ConversationStatus.ARCHIVED, at=now_iso())
    status, body = start(life, conversation_id)
    assert (status, body["msg_id"]) == (409, "CONVERSATION$NOT_STARTABLE")
