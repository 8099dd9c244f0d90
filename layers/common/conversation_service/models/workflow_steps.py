"""What the state machine hands each workflow step (statemachine/create_conversation.asl.json:
each Task's `Payload`), as typed models. A step's handler parses its event with `step_input`;
input that does not fit raises `InvalidWorkflowInput` (Lambda's errorType names the class), which
the state's Catch sends to RecordFailure, which records ERROR with the fields named as the reason.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conversation_service.models.context import SandboxReady
from conversation_service.models.errors import InvalidWorkflowInput

# The conversation-id rule itself is the API's (logic/validation.py); a step only needs an id the
# service wrote, so this bounds it without repeating the rule.
ConversationIdField = Field(min_length=1, max_length=100)


class WorkflowStepInput(BaseModel):
    """Every step gets the conversation and the execution it runs in (`$$.Execution.Name`: the
    run is derived from it, logic/runs.py)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built at first use: one model per function

    conversation_id: str = ConversationIdField
    execution_name: str | None = Field(default=None, min_length=1, max_length=80)


class InitializeContextInput(WorkflowStepInput):
    pass


class LaunchSandboxInput(WorkflowStepInput):
    task_token: str = Field(min_length=1, max_length=8192, repr=False)  # `$$.Task.Token`


class MarkRunningInput(WorkflowStepInput):
    sandbox: SandboxReady  # LaunchSandbox's task output: what the ready sandbox reported


class StepFailure(BaseModel):
    """A Catch's `ResultPath: $.error`: the error's name (Lambda's errorType, `States.Timeout`, a
    sandbox's code) and its cause (Lambda's JSON `{"errorMessage": ...}`, or the sandbox's report)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    Error: str = Field(default="", max_length=256)
    Cause: str | dict[str, Any] | None = None


class RecordFailureInput(WorkflowStepInput):
    error: StepFailure = Field(default_factory=StepFailure)


def step_input[StepInput: WorkflowStepInput](event: Any, model: type[StepInput]) -> StepInput:
    """`event` as `model`, or InvalidWorkflowInput naming what is wrong (never the values: a
    task token or a sandbox's report is no one's business in an error message)."""
    try:
        return parse(event=event, model=model)
    except ValidationError as invalid:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', ())) or 'input'}: {error.get('msg', 'invalid')}"
            for error in invalid.errors(include_url=False, include_input=False)[:5]
        )
        raise InvalidWorkflowInput(f"{model.__name__[: -len('Input')]} got invalid input: {problems}") from None
