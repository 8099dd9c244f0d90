"""Reads the conversations table's DynamoDB stream and hands new records to the starter
function, as Lambda's event source mapping does in AWS (same event shape, INSERT filter)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from devstack.lambda_runtime import FunctionError, LocalLambdaRuntime

RecordObserver = Callable[[dict[str, Any]], None]
# New shards are rare (never, on moto): list them at most this often, read records every call.
SHARD_REFRESH_SECONDS = 1.0


class StreamPump:
    def __init__(
        self,
        stream_arn: str,
        runtime: LocalLambdaRuntime,
        function: str,
        session: boto3.Session,
        observer: RecordObserver | None = None,
    ) -> None:
        """`observer` sees every record once, in stream order, before the INSERT filter (the local
        stack's phase log reads MODIFY records there)."""
        self._stream_arn = stream_arn
        self._runtime = runtime
        self._function = function
        self._observer = observer
        self._observed: dict[str, str] = {}  # shard id -> last sequence number shown to the observer
        # botocore >= 1.44 sends streams calls to account-based hosts that moto 5.2.5 does not route.
        self._client = session.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))
        self._iterators: dict[str, str] = {}
        self._shards_listed_at = 0.0

    def _refresh_shards(self) -> None:
        description = self._client.describe_stream(StreamArn=self._stream_arn)["StreamDescription"]
        for shard in description.get("Shards", []):
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self._client.get_shard_iterator(
                    StreamArn=self._stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]

    def pump_once(self) -> int:
        """Deliver what is new; returns how many INSERT records were handed over."""
        if not self._iterators or time.monotonic() - self._shards_listed_at >= SHARD_REFRESH_SECONDS:
            self._refresh_shards()
            self._shards_listed_at = time.monotonic()
        delivered = 0
        for shard_id, iterator in list(self._iterators.items()):
            response = self._client.get_records(ShardIterator=iterator, Limit=100)
            records = [self._as_lambda_record(record) for record in response.get("Records", [])]
            self._observe(shard_id, records)
            inserts = [record for record in records if record["eventName"] == "INSERT"]
            if inserts:
                result = self._deliver(inserts)
                if result.get("batchItemFailures"):
                    continue  # keep the iterator: the same records are read again next time
                delivered += len(inserts)
            if response.get("NextShardIterator"):
                self._iterators[shard_id] = response["NextShardIterator"]
        return delivered

    def _observe(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        if self._observer is None:
            return
        last = self._observed.get(shard_id)
        for record in records:
            sequence = str(record["dynamodb"].get("SequenceNumber", ""))
            if last is not None and sequence.isdigit() and last.isdigit() and int(sequence) <= int(last):
                continue  # read again after a failed delivery: already shown
            self._observer(record)
            if sequence:
                last = sequence
        if last is not None:
            self._observed[shard_id] = last

    def _deliver(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            result = self._runtime.invoke(self._function, {"Records": records})
        except FunctionError:
            return {"batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]}
        return result if isinstance(result, dict) else {}

    def _as_lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        dynamodb = dict(record["dynamodb"])
        if "ApproximateCreationDateTime" in dynamodb and not isinstance(
            dynamodb["ApproximateCreationDateTime"], int | float
        ):
            dynamodb["ApproximateCreationDateTime"] = dynamodb["ApproximateCreationDateTime"].timestamp()
        return {
            "eventID": record.get("eventID", ""),
            "eventName": record["eventName"],
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": dynamodb,
            "eventSourceARN": self._stream_arn,
        }
