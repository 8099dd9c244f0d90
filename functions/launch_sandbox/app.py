"""Workflow step 2: RunTask on Fargate. The sandbox later completes the task token."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.logic.runs import run_of_execution
from conversation_service.models.environment import LaunchSandboxEnvironment
from conversation_service.models.workflow_steps import LaunchSandboxInput, step_input
from conversation_service.observability import logger, tracer
from conversation_service.services import creation_workflow

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(LaunchSandboxEnvironment)


@logger.inject_lambda_context(correlation_id_path="conversation_id", log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    step = step_input(event, LaunchSandboxInput)  # bad input: InvalidWorkflowInput -> Catch -> RecordFailure
    run = run_of_execution(step.conversation_id, step.execution_name)
    return creation_workflow().launch_sandbox(step.conversation_id, step.task_token, run)
