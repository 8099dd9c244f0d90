"""The local stack acts when AWS would, not at its next poll: moto's RunTask and StopTask wake the
local Fargate, a record appended to a table's stream wakes that stream's pump, and a write to the
pool table ends an idle sandbox's wait between its assignment reads (internals of the pinned moto,
wrapped by devstack.fargate, devstack.stream_pump and devstack.pool_wakes). Fails loudly if moto
moves what the hooks wrap."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import boto3
from conversation_service.dal.pool import PoolStore
from moto import mock_aws

from devstack.fargate import wake_on_task_changes
from devstack.moto_wakes import stop_waking
from devstack.pool_wakes import pool_writes, wake_on_pool_writes
from devstack.stream_pump import wake_on_stream_records


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


def test_every_kind_of_write_to_a_streamed_table_wakes_its_pump() -> None:
    woken = threading.Event()
    with mock_aws():
        wake_on_stream_records(woken)
        try:
            dynamodb = boto3.client("dynamodb", region_name="us-east-1")
            dynamodb.create_table(
                TableName="streamed",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            )
            key = {"pk": {"S": "a"}}
            writes = {
                "PutItem": lambda: dynamodb.put_item(TableName="streamed", Item={**key, "n": {"N": "1"}}),
                "UpdateItem": lambda: dynamodb.update_item(
                    TableName="streamed",
                    Key=key,
                    UpdateExpression="SET n = :two",
                    ExpressionAttributeValues={":two": {"N": "2"}},
                ),
                "TransactWriteItems": lambda: dynamodb.transact_write_items(
                    TransactItems=[{"Put": {"TableName": "streamed", "Item": {"pk": {"S": "b"}}}}]
                ),
                "DeleteItem": lambda: dynamodb.delete_item(TableName="streamed", Key=key),
            }
            for name, write in writes.items():
                woken.clear()
                write()
                assert woken.is_set(), f"{name} did not wake the stream pump"
        finally:
            stop_waking(woken)


def test_a_write_to_the_pool_table_ends_the_assignment_polls_wait_and_others_do_not() -> None:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        for name in ("wakes-pool", "wakes-other"):
            dynamodb.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": "sandbox_id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "sandbox_id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        wake_on_pool_writes("wakes-pool")
        store = PoolStore("wakes-pool")

        def waited_while(write: Callable[[], object]) -> float:
            """Seconds a 5 s wait lasted while ``write`` ran 0.2 s into it."""
            timer = threading.Timer(0.2, write)
            began = time.monotonic()
            timer.start()
            store.wait_for_change("pool-1", 5.0)
            timer.join()
            return time.monotonic() - began

        item = {"sandbox_id": {"S": "pool-1"}, "pool_status": {"S": "IDLE"}}
        writes = pool_writes()
        assert waited_while(lambda: dynamodb.put_item(TableName="wakes-pool", Item=item)) < 2.0
        update = {"UpdateExpression": "SET pool_status = :s", "ExpressionAttributeValues": {":s": {"S": "CLAIMED"}}}
        key = {"sandbox_id": {"S": "pool-1"}}
        assert waited_while(lambda: dynamodb.update_item(TableName="wakes-pool", Key=key, **update)) < 2.0
        claim = [{"Update": {"TableName": "wakes-pool", "Key": key, **update}}]
        assert waited_while(lambda: dynamodb.transact_write_items(TransactItems=claim)) < 2.0
        assert pool_writes() > writes
        # Another table's writes leave the poll to its own schedule.
        began = time.monotonic()
        threading.Timer(0.1, lambda: dynamodb.put_item(TableName="wakes-other", Item=item)).start()
        store.wait_for_change("pool-1", 1.0)
        assert time.monotonic() - began >= 0.95
