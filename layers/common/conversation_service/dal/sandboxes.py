"""ECS Fargate: one task per conversation, started by its id and tagged with it."""

from __future__ import annotations

from botocore.exceptions import ClientError

from conversation_service.config import ServiceConfig
from conversation_service.dal.aws import client, error_code


class SandboxLaunchFailed(Exception):
    """ECS would not start the task (capacity, configuration, limits)."""


class SandboxFleet:
    def __init__(self, config: ServiceConfig) -> None:
        self._config = config

    def launch(self, conversation_id: str, user_id: str, environment: dict[str, str]) -> str:
        network = {
            "subnets": self._config.sandbox_subnet_ids,
            "securityGroups": self._config.sandbox_security_group_ids,
            "assignPublicIp": "ENABLED" if self._config.sandbox_assign_public_ip else "DISABLED",
        }
        try:
            response = client("ecs").run_task(
                cluster=self._config.sandbox_cluster_arn,
                taskDefinition=self._config.sandbox_task_definition_arn,
                launchType="FARGATE",
                count=1,
                startedBy=conversation_id,
                networkConfiguration={"awsvpcConfiguration": network},
                overrides={
                    "containerOverrides": [
                        {
                            "name": self._config.sandbox_container_name,
                            "environment": [{"name": key, "value": value} for key, value in environment.items()],
                        }
                    ]
                },
                tags=[
                    {"key": "conversation_id", "value": conversation_id},
                    {"key": "user_id", "value": user_id},
                ],
                propagateTags="TASK_DEFINITION",
            )
        except ClientError as error:
            raise SandboxLaunchFailed(f"ECS refused the task: {error_code(error)}") from error
        failures = response.get("failures") or []
        tasks = response.get("tasks") or []
        if failures or not tasks:
            reasons = ", ".join(sorted({str(failure.get("reason", "unknown")) for failure in failures})) or "no task"
            raise SandboxLaunchFailed(f"ECS could not place the sandbox task: {reasons}")
        return str(tasks[0]["taskArn"])

    def running_tasks(self, conversation_id: str) -> list[str]:
        """Tasks of this conversation ECS still wants running (RunTask's `startedBy` is its id)."""
        arns: list[str] = []
        paginator = client("ecs").get_paginator("list_tasks")
        for page in paginator.paginate(
            cluster=self._config.sandbox_cluster_arn, startedBy=conversation_id, desiredStatus="RUNNING"
        ):
            arns.extend(str(arn) for arn in page.get("taskArns", []))
        return arns

    def stop(self, task_arn: str, reason: str) -> None:
        try:
            client("ecs").stop_task(cluster=self._config.sandbox_cluster_arn, task=task_arn, reason=reason[:255])
        except ClientError as error:
            if error_code(error) not in {"InvalidParameterException", "ResourceNotFoundException"}:
                raise
