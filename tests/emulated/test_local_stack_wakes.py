"""The local Fargate acts when ECS is asked to, not at its next poll: moto's RunTask and StopTask
(an internal of the pinned moto, patched by devstack.fargate) wake it. Fails loudly if moto's ECS
backend renames what the hook wraps."""

from __future__ import annotations

import threading

import boto3
from moto import mock_aws

from devstack.fargate import stop_waking, wake_on_task_changes


def test_run_task_and_stop_task_wake_the_local_fargate() -> None:
    woken = threading.Event()
    with mock_aws():
        wake_on_task_changes(woken)
        try:
            ecs = boto3.client("ecs", region_name="us-east-1")
            cluster = ecs.create_cluster(clusterName="wakes")["cluster"]["clusterArn"]
            definition = ecs.register_task_definition(
                family="sandbox",
                requiresCompatibilities=["FARGATE"],
                networkMode="awsvpc",
                cpu="1024",
                memory="2048",
                containerDefinitions=[{"name": "sandbox", "image": "sandbox", "memory": 2048}],
            )["taskDefinition"]["taskDefinitionArn"]
            ec2 = boto3.client("ec2", region_name="us-east-1")
            subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
            group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
            network = {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}}
            launch = {"launchType": "FARGATE", "networkConfiguration": network}
            assert not woken.is_set()
            (task,) = ecs.run_task(cluster=cluster, taskDefinition=definition, **launch)["tasks"]
            assert woken.is_set(), "RunTask did not wake the local Fargate"
            woken.clear()
            ecs.stop_task(cluster=cluster, task=task["taskArn"], reason="test")
            assert woken.is_set(), "StopTask did not wake the local Fargate"
        finally:
            stop_waking(woken)
        woken.clear()
        ecs.run_task(cluster=cluster, taskDefinition=definition, **launch)
        assert not woken.is_set(), "a stopped local Fargate was still woken"
