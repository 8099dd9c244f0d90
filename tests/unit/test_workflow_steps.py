"""The creation workflow's steps (logic/workflow.py), the sweeper and the sandbox watch on
in-memory ports: what each step writes, which run it may touch, how failures are classified.
The state machine itself runs in tests/integration and tests/lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conversation_service.logic.runs import execution_name
from conversation_service.models.context import AgentContext, SandboxReady
from conversation_service.models.domain import ConversationStatus, RuntimeStatus
from conversation_service.models.errors import (
    ConversationNotStarting,
    InvalidWorkflowInput,
    SandboxLaunchFailed,
    SandboxLaunchThrottled,
    WorkflowStartRefused,
    WorkflowStartRetryable,
)
from conversation_service.models.workflow_steps import StepFailure

from tests.support.in_memory import InMemoryService

READY = SandboxReady(agent_server_url="http://10.0.0.7:8000", agent_conversation_id="a" * 32, workspace_dir="/w")


def test_the_outbox_starts_one_execution_per_run(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    workflow = service.workflow()
    workflow.start_for(conversation_id, user)
    workflow.start_for(conversation_id, user)  # the stream delivers a record twice: one execution
    workflow.start_for(conversation_id, user, run=2)
    assert sorted(service.engine.executions) == sorted(
        [execution_name(conversation_id, 1), execution_name(conversation_id, 2)]
    )
    assert service.engine.executions[execution_name(conversation_id, 1)].payload == {
        "conversation_id": conversation_id,
        "run": 1,
    }


def test_a_refused_workflow_start_ends_the_conversation_in_error_a_throttled_one_is_retried(
    service: InMemoryService, user: str
) -> None:
    conversation_id = service.create()
    service.engine.refuse_starts_with = WorkflowStartRetryable
    with pytest.raises(WorkflowStartRetryable):
        service.workflow().start_for(conversation_id, user)
    assert service.conversations.get(conversation_id).conversation_status == ConversationStatus.STARTING  # type: ignore[union-attr]
    service.engine.refuse_starts_with = WorkflowStartRefused
    service.workflow().start_for(conversation_id, user)
    conversation = service.conversations.get(conversation_id)
    assert conversation is not None and conversation.conversation_status == ConversationStatus.ERROR
    assert conversation.error_code == "INTERNAL"
    assert service.users.active_count(user) == 0


def test_initialize_context_writes_the_context_the_sandbox_reads(service: InMemoryService, user: str) -> None:
    conversation_id = service.create({"initial_user_msg": "fix the bug", "conversation_instructions": "be brief"})
    answer = service.workflow().initialize_context(conversation_id, run=1)
    assert answer == {"context_key": f"conversations/{conversation_id}/context.json"}
    context = AgentContext.model_validate(service.context.get_json(answer["context_key"]))
    assert (context.conversation_id, context.user_id) == (conversation_id, user)
    assert context.first_message is not None and "fix the bug" in str(context.first_message)
    assert context.conversation_instructions == "be brief"
    assert context.llm.model == "anthropic/claude-sonnet-4"
    conversation = service.conversations.get(conversation_id)
    assert conversation is not None and conversation.context_key == answer["context_key"]
    assert conversation.runtime_status == RuntimeStatus.INITIALIZING_CONTEXT.value
    assert [entry.phase for entry in conversation.timeline] == ["STATUS$QUEUED", conversation.runtime_status]
    assert "sk-test" not in str(service.context.get_json(answer["context_key"]))


def test_a_step_of_an_older_run_touches_nothing(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    lifecycle = service.lifecycle()
    lifecycle.stop(user, conversation_id)
    lifecycle.start(user, conversation_id)  # run 2
    before = service.conversations.item(conversation_id)
    workflow = service.workflow()
    with pytest.raises(ConversationNotStarting):
        workflow.initialize_context(conversation_id, run=1)
    with pytest.raises(ConversationNotStarting):
        workflow.launch_sandbox(conversation_id, "token-1", run=1)
    timeout = StepFailure(Error="States.Timeout")
    assert workflow.record_failure(conversation_id, timeout, run=1) == {"error_code": "STOPPED"}
    assert service.conversations.item(conversation_id) == before
    assert service.fleet.tasks == {}


def test_launch_seals_the_sandbox_token_for_its_conversation(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    workflow = service.workflow()
    workflow.initialize_context(conversation_id, run=1)
    answer = workflow.launch_sandbox(conversation_id, "task-token-1", run=1)
    assert answer["start"] == "cold"
    task = service.fleet.tasks[answer["task_arn"]]
    assert task.started_by == conversation_id and task.tags == {"conversation_id": conversation_id, "user_id": user}
    sealed = task.environment["SANDBOX_TOKEN_CIPHERTEXT"]
    token = service.token_sealer.open(sealed, conversation_id=conversation_id)
    assert token.startswith(f"{conversation_id}.") and token not in str(task.environment)
    with pytest.raises(ValueError):
        service.token_sealer.open(sealed, conversation_id="b" * 32)
    conversation = service.conversations.get(conversation_id)
    assert conversation is not None
    assert (conversation.task_arn, conversation.task_token, conversation.start) == (
        answer["task_arn"],
        "task-token-1",
        "cold",
    )
    assert conversation.sandbox_token_hash and token not in conversation.sandbox_token_hash


def test_a_conversation_closed_while_its_sandbox_launched_stops_the_task(service: InMemoryService, user: str) -> None:
    conversation_id = service.create()
    original_launch = service.fleet.launch

    def launch_then_user_stops(*args: object, **kwargs: object) -> str:
        arn = original_launch(*args, **kwargs)  # type: ignore[arg-type]
        service.lifecycle().stop(user, conversation_id)
        return arn

    service.fleet.launch = launch_then_user_stops  # type: ignore[method-assign]
    with pytest.raises(ConversationNotStarting):
        service.workflow().launch_sandbox(conversation_id, "task-token-1", run=1)
    (task,) = service.fleet.tasks.values()
    assert task.desired_status == "STOPPED"


def test_mark_running_records_the_sandbox_and_a_late_one_stops_its_task(service: InMemoryService, user: str) -> None:
    running, late = service.create(), service.create()
    workflow = service.workflow()
    for conversation_id in (running, late):
        workflow.launch_sandbox(conversation_id, f"token-{conversation_id}", run=1)
    assert workflow.mark_running(running, READY, run=1) == {"conversation_status": "RUNNING"}
    conversation = service.conversations.get(running)
    assert conversation is not None and conversation.agent_server_url == READY.agent_server_url
    assert conversation.timeline[-1].phase == "STATUS$READY"
    service.lifecycle().stop(user, late)
    assert workflow.mark_running(late, READY, run=1) == {"conversation_status": "STOPPED"}
    late_task = service.fleet.tasks[service.conversations.get(late).task_arn]  # type: ignore[union-attr,index]
    assert late_task.desired_status == "STOPPED"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ({"Error": "States.Timeout"}, "PHASE_TIMEOUT"),
        ({"Error": "States.HeartbeatTimeout"}, "PHASE_TIMEOUT"),
        ({"Error": SandboxLaunchFailed.__name__, "Cause": '{"errorMessage": "no subnet"}'}, "SANDBOX_LAUNCH_FAILED"),
        ({"Error": SandboxLaunchThrottled.__name__}, "SANDBOX_LAUNCH_FAILED"),
        ({"Error": "KeyError", "Cause": "surprise"}, "INTERNAL"),
        (
            {
                "Error": InvalidWorkflowInput.__name__,
                "Cause": '{"errorMessage": "MarkRunning got invalid input: sandbox: Field required"}',
            },
            "INTERNAL",
        ),
    ],
)
def test_record_failure_classifies_closes_and_stops_the_task(
    service: InMemoryService, user: str, error: dict[str, str], code: str
) -> None:
    conversation_id = service.create()
    workflow = service.workflow()
    workflow.launch_sandbox(conversation_id, "token-1", run=1)
    failure = StepFailure.model_validate(error)
    assert workflow.record_failure(conversation_id, failure, run=1) == {"error_code": code}
    conversation = service.conversations.get(conversation_id)
    assert conversation is not None and conversation.conversation_status == ConversationStatus.ERROR
    assert conversation.error_code == code and conversation.error_message
    if error["Error"] == InvalidWorkflowInput.__name__:  # the reason, as the step named it
        assert "MarkRunning got invalid input: sandbox: Field required" in conversation.error_message
    assert service.fleet.tasks[conversation.task_arn].desired_status == "STOPPED"  # type: ignore[index]
    assert service.users.active_count(user) == 0
    assert workflow.record_failure(conversation_id, failure, run=1) == {"error_code": code}  # twice: harmless
    assert service.users.active_count(user) == 0


def test_the_sweeper_closes_only_stale_starting_conversations(service: InMemoryService, user: str) -> None:
    stale, fresh, running = service.create(), service.create(), service.create()
    service.conversations.items[stale]["updated_at"] = "2020-01-01T00:00:00.000Z"
    service.conversations.items[running]["updated_at"] = "2020-01-01T00:00:00.000Z"
    service.conversations.items[running]["conversation_status"] = "RUNNING"
    assert service.sweeper().sweep() == [stale]
    assert service.conversations.get(stale).conversation_status == ConversationStatus.ERROR  # type: ignore[union-attr]
    assert service.conversations.get(fresh).conversation_status == ConversationStatus.STARTING  # type: ignore[union-attr]
    later = datetime.now(UTC) + timedelta(seconds=service.config.stale_start_seconds + 60)
    assert service.sweeper().sweep(later) == [fresh]
    assert service.users.active_count(user) == 1


def test_a_stopped_task_closes_its_running_conversation_or_fails_the_waiting_step(
    service: InMemoryService, user: str
) -> None:
    running, starting = service.create(), service.create()
    workflow = service.workflow()
    token = service.engine.wait_for()
    for conversation_id in (running, starting):
        workflow.launch_sandbox(conversation_id, token, run=1)
    workflow.mark_running(running, READY, run=1)
    watch = service.sandbox_watch()
    task_of = {cid: service.conversations.get(cid).task_arn for cid in (running, starting)}  # type: ignore[union-attr]
    assert watch.task_stopped(running, "arn:another-task", "Essential container exited", 1) == "ignored"
    assert watch.task_stopped(running, task_of[running], "Essential container exited", 137) == "closed"
    closed = service.conversations.get(running)
    assert closed is not None and closed.conversation_status == ConversationStatus.ERROR
    assert closed.error_details == {"stopped_reason": "Essential container exited", "exit_code": 137}
    assert watch.task_stopped(starting, task_of[starting], "OutOfMemoryError", 137) == "workflow-failed"
    assert service.engine.callbacks[token].outcome == "failure"
    assert watch.task_stopped(starting, task_of[starting], "OutOfMemoryError", 137) == "ignored"  # answered once
