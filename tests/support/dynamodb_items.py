"""Reading and emptying the template's tables in (emulated) DynamoDB, as the tests look at them."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3

from devstack.template_resources import StackResources


@cache
def _dynamodb_client(endpoint: str | None) -> Any:
    return boto3.client("dynamodb")


def dynamodb_client() -> Any:
    """The tests' own DynamoDB client, made once per endpoint (in-process moto, or a moto server
    AWS_ENDPOINT_URL names): making one costs more CPU than the scans a test does with it."""
    return _dynamodb_client(os.environ.get("AWS_ENDPOINT_URL"))


def conversation_item(table: str, conversation_id: str) -> dict[str, Any]:
    """The raw DynamoDB item (typed attributes), read with a consistent read."""
    response = dynamodb_client().get_item(
        TableName=table, Key={"conversation_id": {"S": conversation_id}}, ConsistentRead=True
    )
    return response.get("Item", {})


def scan_all(table: str) -> list[dict[str, Any]]:
    """Every item of the table, read consistently, page after page."""
    client = dynamodb_client()
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def active_index_ids(table: str, user_id: str) -> list[str]:
    """The user's conversations listed by the sparse ActiveByUser index."""
    response = dynamodb_client().query(
        TableName=table,
        IndexName="ActiveByUser",
        KeyConditionExpression="active_user_id = :user",
        ExpressionAttributeValues={":user": {"S": user_id}},
    )
    return [item["conversation_id"]["S"] for item in response["Items"]]


def active_counter(users_table: str, user_id: str) -> int:
    response = dynamodb_client().get_item(
        TableName=users_table, Key={"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "QUOTA"}}, ConsistentRead=True
    )
    return int(response.get("Item", {}).get("active_count", {"N": "0"})["N"])


def empty_tables(resources: StackResources, bucket: bool = True) -> None:
    """Delete every item of the conversations, users and idempotency tables (and every object of
    the context bucket): a fresh stack without provisioning one."""
    dynamodb = dynamodb_client()
    for logical_id in ("ConversationsTable", "UsersTable", "IdempotencyTable"):
        table = resources.physical[logical_id]
        key_names = [key["AttributeName"] for key in dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]]
        for item in scan_all(table):
            dynamodb.delete_item(TableName=table, Key={name: item[name] for name in key_names})
    if not bucket:
        return
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=resources.physical["ContextBucket"]):
        for entry in page.get("Contents", []):
            s3.delete_object(Bucket=resources.physical["ContextBucket"], Key=entry["Key"])
