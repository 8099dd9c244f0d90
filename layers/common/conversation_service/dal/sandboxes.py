"""ECS Fargate: one task per conversation, started by its id and tagged with it (or, for the
warm pool, started by its pool sandbox id)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from conversation_service.config import ServiceConfig
from conversation_service.dal.aws import client, error_code, is_transient
from conversation_service.models.errors import SandboxLaunchFailed, SandboxLaunchThrottled

# RunTask `failures[].reason` values that pass with time (Fargate capacity, the account's
# concurrent-task quota), unlike a missing task definition or a bad network configuration.
_TRANSIENT_FAILURE_MARKERS = ("capacity is unavailable", "limit", "throttl", "try again")

TASK_PHASE_TIMESTAMPS = ("createdAt", "pullStartedAt", "pullStoppedAt", "startedAt")
"""DescribeTasks' own phase timestamps: where a cold task's minute went."""


class SandboxFleet:
    def __init__(self, config: ServiceConfig) -> None:
        self._config = config

    def launch(self, conversation_id: str, user_id: str, environment: dict[str, str]) -> str:
        return self.run_task(
            conversation_id,
            environment,
            [{"key": "conversation_id", "value": conversation_id}, {"key": "user_id", "value": user_id}],
        )

    def launch_pool_sandbox(self, sandbox_id: str, environment: dict[str, str]) -> str:
        return self.run_task(sandbox_id, environment, [{"key": "pool_sandbox_id", "value": sandbox_id}])

    def run_task(self, started_by: str, environment: dict[str, str], tags: list[dict[str, str]]) -> str:
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
                startedBy=started_by,
                networkConfiguration={"awsvpcConfiguration": network},
                overrides={
                    "containerOverrides": [
                        {
                            "name": self._config.sandbox_container_name,
                            "environment": [{"name": key, "value": value} for key, value in environment.items()],
                        }
                    ]
                },
                tags=tags,
                propagateTags="TASK_DEFINITION",
            )
        except ClientError as error:
            code = error_code(error)
            if is_transient(error):
                raise SandboxLaunchThrottled(f"ECS throttled RunTask: {code}") from error
            raise SandboxLaunchFailed(f"ECS refused the task: {code}") from error
        failures = response.get("failures") or []
        tasks = response.get("tasks") or []
        if failures or not tasks:
            reasons = ", ".join(sorted({str(failure.get("reason", "unknown")) for failure in failures})) or "no task"
            if any(marker in reasons.lower() for marker in _TRANSIENT_FAILURE_MARKERS):
                raise SandboxLaunchThrottled(f"ECS has no capacity for the sandbox task now: {reasons}")
            raise SandboxLaunchFailed(f"ECS could not place the sandbox task: {reasons}")
        return str(tasks[0]["taskArn"])

    def phase_timestamps(self, task_arn: str) -> dict[str, Any]:
        """The task's createdAt / pullStartedAt / pullStoppedAt / startedAt (those it has yet)."""
        tasks = client("ecs").describe_tasks(cluster=self._config.sandbox_cluster_arn, tasks=[task_arn]).get("tasks")
        task = (tasks or [{}])[0]
        return {name: task[name] for name in TASK_PHASE_TIMESTAMPS if task.get(name) is not None}

    def private_address(self, task_arn: str) -> str | None:
        """The private IPv4 of the task's network attachment (awsvpc ENI), None before it has one."""
        tasks = client("ecs").describe_tasks(cluster=self._config.sandbox_cluster_arn, tasks=[task_arn]).get("tasks")
        for attachment in (tasks or [{}])[0].get("attachments") or []:
            if attachment.get("type") != "ElasticNetworkInterface":
                continue
            for detail in attachment.get("details") or []:
                if detail.get("name") == "privateIPv4Address" and detail.get("value"):
                    return str(detail["value"])
        return None

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
