"""devstack.moto_speedups changes what the local stack's moto costs, never what it answers: a
cancelled transaction still leaves a streamed table and its stream as they were, a committed one
still adds its records, and backends are still found by host. Fails loudly if the pinned moto
moves what they patch."""

from __future__ import annotations

import copy
import os
import uuid
from typing import Any

import boto3
import moto
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.backends import list_of_moto_modules
from moto.dynamodb.models import dynamodb_backends

from devstack import moto_speedups

ACCOUNT = "123456789012"


@pytest.fixture(autouse=True)
def speedups() -> None:
    moto_speedups.apply()


def stream_records(name: str) -> list[dict[str, object]]:
    table = dynamodb_backends[ACCOUNT]["us-east-1"].get_table(name)
    return [record.to_json() for record in table.stream_shard.items]


def streamed_table(table_name: str, view_type: str) -> Any:
    """A client, after making ``table_name`` (key ``pk``) with a stream of ``view_type``."""
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view_type},
    )
    return dynamodb


def update_then_insert(table_name: str, new_key: str) -> list[dict[str, Any]]:
    """Set item-0's n, then put ``new_key`` unless it exists."""
    update = {
        "TableName": table_name,
        "Key": {"pk": {"S": "item-0"}},
        "UpdateExpression": "SET n = :one",
        "ExpressionAttributeValues": {":one": {"N": "1"}},
    }
    put = {"TableName": table_name, "Item": {"pk": {"S": new_key}}, "ConditionExpression": "attribute_not_exists(pk)"}
    return [{"Update": update}, {"Put": put}]


def test_a_cancelled_transaction_leaves_the_table_and_its_stream_as_they_were() -> None:
    table_name = f"streamed-{uuid.uuid4().hex[:8]}"
    with mock_aws():
        dynamodb = streamed_table(table_name, "NEW_AND_OLD_IMAGES")
        for index in range(3):
            dynamodb.put_item(TableName=table_name, Item={"pk": {"S": f"item-{index}"}, "n": {"N": "0"}})
        before_items = dynamodb.scan(TableName=table_name, ConsistentRead=True)["Items"]
        before_stream = stream_records(table_name)
        assert len(before_stream) == 3

        with pytest.raises(ClientError, match="TransactionCanceled"):
            # The update is applied first, then undone when the put fails its condition.
            dynamodb.transact_write_items(TransactItems=update_then_insert(table_name, "item-1"))
        assert dynamodb.scan(TableName=table_name, ConsistentRead=True)["Items"] == before_items
        assert stream_records(table_name) == before_stream

        dynamodb.transact_write_items(TransactItems=update_then_insert(table_name, "item-9"))
        after = stream_records(table_name)
        assert after[:3] == before_stream
        assert [record["eventName"] for record in after[3:]] == ["MODIFY", "INSERT"]


def test_a_table_copy_shares_the_stream_records_and_not_their_list() -> None:
    table_name = f"copied-{uuid.uuid4().hex[:8]}"
    with mock_aws():
        dynamodb = streamed_table(table_name, "NEW_IMAGE")
        dynamodb.put_item(TableName=table_name, Item={"pk": {"S": "a"}})
        table = dynamodb_backends[ACCOUNT]["us-east-1"].get_table(table_name)
        copied = copy.deepcopy(table)
        assert copied.stream_shard is not table.stream_shard
        assert copied.stream_shard.table is copied  # the copy's shard belongs to the copied table
        assert copied.stream_shard.items is not table.stream_shard.items
        assert copied.stream_shard.items[0] is table.stream_shard.items[0]
        assert copied.items is not table.items


def test_backends_are_still_listed_by_their_directories() -> None:
    package = os.path.dirname(moto.__file__)
    directories = sorted(
        name for name in os.listdir(package) if os.path.isdir(os.path.join(package, name)) and not name.startswith("__")
    )
    assert list(list_of_moto_modules()) == directories  # the name this test imported: moto's own
    from moto import backends

    assert list(backends.list_of_moto_modules()) == directories
    assert "dynamodb" in backends.list_of_moto_modules() and "dynamodb" in backends.list_of_moto_modules()
