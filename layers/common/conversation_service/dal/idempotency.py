"""The Powertools idempotency store (a DynamoDB table with TTL)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conversation_service.dal.aws import client

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer


def idempotency_store(table_name: str) -> DynamoDBPersistenceLayer:
    # Imported here: only the first keyed write of a process loads Powertools idempotency.
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(table_name=table_name, boto3_client=client("dynamodb"))
