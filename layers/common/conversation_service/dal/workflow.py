"""Step Functions: starting the creation workflow and answering its task tokens."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from conversation_service.dal.aws import client, error_code, is_transient
from conversation_service.models.errors import WorkflowNotWaiting, WorkflowStartRefused, WorkflowStartRetryable

_GONE = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})


class WorkflowEngine:
    def __init__(self, state_machine_arn: str) -> None:
        self._state_machine_arn = state_machine_arn

    def start(self, execution_name: str, payload: dict[str, Any]) -> str | None:
        """Start once per name: a repeat of the same start is not an error (returns None)."""
        try:
            response = client("stepfunctions").start_execution(
                stateMachineArn=self._state_machine_arn, name=execution_name, input=json.dumps(payload)
            )
        except ClientError as error:
            code = error_code(error)
            if code == "ExecutionAlreadyExists":
                return None
            if is_transient(error):
                raise WorkflowStartRetryable(code) from error
            raise WorkflowStartRefused(code) from error
        return str(response["executionArn"])

    def execution_arn(self, execution_name: str) -> str:
        return self._state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{execution_name}"

    def stop(self, execution_name: str, cause: str) -> bool:
        """Stop an execution; one that never started is not an error (False)."""
        try:
            client("stepfunctions").stop_execution(
                executionArn=self.execution_arn(execution_name), error="ConversationClosed", cause=cause[:1000]
            )
        except ClientError as error:
            if error_code(error) == "ExecutionDoesNotExist":
                return False
            raise
        return True

    def heartbeat(self, task_token: str) -> None:
        self._answer("send_task_heartbeat", taskToken=task_token)

    def succeed(self, task_token: str, output: dict[str, Any]) -> None:
        self._answer("send_task_success", taskToken=task_token, output=json.dumps(output))

    def fail(self, task_token: str, error: str, cause: dict[str, Any]) -> None:
        self._answer("send_task_failure", taskToken=task_token, error=error[:256], cause=json.dumps(cause)[:32000])

    def _answer(self, operation: str, **arguments: Any) -> None:
        try:
            getattr(client("stepfunctions"), operation)(**arguments)
        except ClientError as error:
            if error_code(error) in _GONE:
                raise WorkflowNotWaiting(error_code(error)) from error
            raise
