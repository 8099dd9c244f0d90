"""A sandbox task that stops on its own is a conversation that can no longer run.

ECS publishes "ECS Task State Change" events; for a STOPPED sandbox task (its `startedBy` is the
conversation id) this ends the conversation honestly instead of leaving it RUNNING with no
runtime behind it. Stops we asked for (the user's stop, a recorded failure) find the
conversation already closed, and are ignored.
"""

from __future__ import annotations

from typing import Any

from conversation_service.logic.clock import now_iso
from conversation_service.models.domain import ConversationStatus
from conversation_service.models.errors import WorkflowNotWaiting
from conversation_service.ports import ConversationStore, WorkflowEngine

RUNTIME_UNHEALTHY = "RUNTIME_UNHEALTHY"


def _describe(stopped_reason: str, exit_code: int | None) -> str:
    detail = stopped_reason or "no reason given"
    if exit_code is not None:
        detail = f"{detail}; exit code {exit_code}"
    return f"The sandbox stopped unexpectedly ({detail}). Start the conversation again."


class SandboxWatch:
    def __init__(self, conversations: ConversationStore, engine: WorkflowEngine) -> None:
        self._conversations = conversations
        self._engine = engine

    def task_stopped(self, conversation_id: str, task_arn: str, stopped_reason: str, exit_code: int | None) -> str:
        """Returns what was done: `closed`, `workflow-failed` or `ignored`."""
        conversation = self._conversations.get(conversation_id, consistent=True)
        if conversation is None or conversation.task_arn != task_arn:
            return "ignored"
        message = _describe(stopped_reason, exit_code)
        if conversation.conversation_status == ConversationStatus.RUNNING:
            details: dict[str, Any] = {"stopped_reason": stopped_reason[:500], "exit_code": exit_code}
            closed = self._conversations.deactivate(
                conversation_id,
                conversation.user_id,
                ConversationStatus.ERROR,
                at=now_iso(),
                error_code_value=RUNTIME_UNHEALTHY,
                error_message=message,
                error_details=details,
            )
            return "closed" if closed else "ignored"
        if conversation.conversation_status == ConversationStatus.STARTING and conversation.task_token:
            # The workflow is waiting for this sandbox: fail its step now rather than at the
            # heartbeat timeout; RecordFailure then closes the conversation as for any failure.
            try:
                self._engine.fail(conversation.task_token, RUNTIME_UNHEALTHY, {"message": message})
            except WorkflowNotWaiting:
                return "ignored"
            return "workflow-failed"
        return "ignored"
