"""Reads the conversations table's DynamoDB stream and hands its records to a function, as
Lambda's event source mapping does in AWS: every record (INSERT, MODIFY, REMOVE: the template's
mapping has no FilterCriteria), in order, in batches, with the same event shape.

Checkpointing is Lambda's with `ReportBatchItemFailures`: after a batch succeeds, reading goes on
after its last record; after a batch item failure (or an unhandled error, which fails the whole
batch), it starts again at the first failed record. With `bisect_batch_on_function_error` a
failed batch is read again in halves (down to the one failing record), and with
`maximum_retry_attempts` a batch that keeps failing is given up after that many retries:
described to `on_failure` (the mapping's OnFailure destination) and skipped, so one bad record
does not hold back the others forever.

Every poll asks for a fresh iterator at the checkpoint (AFTER_SEQUENCE_NUMBER/AT_SEQUENCE_NUMBER)
rather than following NextShardIterator: moto rolls a cancelled transaction back (a creation at
the concurrency limit, say) by putting a deep copy of the table in place, stream shard included,
so an iterator taken before that would never see another record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config

from devstack.lambda_runtime import FunctionError, LocalLambdaRuntime
from devstack.moto_wakes import wake_after_calls

RecordObserver = Callable[[dict[str, Any]], None]
FailureDestination = Callable[[dict[str, Any]], None]
# New shards are rare (never, on moto): list them at most this often, read records every call.
SHARD_REFRESH_SECONDS = 1.0
DEFAULT_BATCH_SIZE = 100  # Lambda's default for a DynamoDB stream
# A batch is read at most this many times per call to pump_once (a backlog drains in one call).
MAX_BATCHES_PER_POLL = 50
# With a retry limit, a failed batch waits before its next try: 0.2 s, doubling, at most 5 s.
RETRY_BACKOFF_SECONDS = (0.2, 5.0)


class StreamPump:
    def __init__(
        self,
        stream_arn: str,
        runtime: LocalLambdaRuntime,
        function: str,
        session: boto3.Session,
        observer: RecordObserver | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        maximum_retry_attempts: int | None = None,
        bisect_batch_on_function_error: bool = False,
        on_failure: FailureDestination | None = None,
    ) -> None:
        """`observer` sees every record once, in stream order, before it is delivered (the local
        stack's phase log). `maximum_retry_attempts` None: retry a failing batch forever."""
        self._stream_arn = stream_arn
        self._runtime = runtime
        self._function = function
        self._observer = observer
        self._batch_size = batch_size
        self._maximum_retry_attempts = maximum_retry_attempts
        self._bisect = bisect_batch_on_function_error
        self._on_failure = on_failure
        self._observed: dict[str, str] = {}  # shard id -> last sequence number shown to the observer
        # botocore >= 1.44 sends streams calls to account-based hosts that moto 5.2.5 does not route.
        self._client = session.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))
        self._shards: list[str] = []
        self._shards_listed_at = 0.0
        # shard id -> (iterator type, sequence number): where the next read starts.
        self._checkpoints: dict[str, tuple[str, str | None]] = {}
        self._retries: dict[tuple[str, str], int] = {}  # (shard, first sequence of the batch) -> retries
        self._not_before: dict[str, float] = {}  # shard id -> monotonic time of its next retry
        self._bisected: dict[str, int] = {}  # shard id -> batch size while bisecting a failed batch
        # Long-lived iterators (TRIM_HORIZON, then NextShardIterator), for subclasses that read
        # that way: `_refresh_shards` adds one for each new shard. pump_once does not use them.
        self._iterators: dict[str, str] = {}

    def _refresh_shards(self) -> None:
        description = self._client.describe_stream(StreamArn=self._stream_arn)["StreamDescription"]
        self._shards = [shard["ShardId"] for shard in description.get("Shards", [])]
        self._shards_listed_at = time.monotonic()
        for shard_id in self._shards:
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self._client.get_shard_iterator(
                    StreamArn=self._stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]

    def _list_shards(self) -> list[str]:
        if not self._shards or time.monotonic() - self._shards_listed_at >= SHARD_REFRESH_SECONDS:
            description = self._client.describe_stream(StreamArn=self._stream_arn)["StreamDescription"]
            self._shards = [shard["ShardId"] for shard in description.get("Shards", [])]
            self._shards_listed_at = time.monotonic()
        return self._shards

    def pump_once(self) -> int:
        """Deliver what is new; returns how many records were handed over successfully."""
        delivered = 0
        for shard_id in self._list_shards():
            for _ in range(MAX_BATCHES_PER_POLL):
                count, more = self._pump_shard(shard_id)
                delivered += count
                if not more:
                    break
        return delivered

    def _pump_shard(self, shard_id: str) -> tuple[int, bool]:
        """One batch of one shard: (records delivered, whether to read again now)."""
        if time.monotonic() < self._not_before.get(shard_id, 0.0):
            return 0, False
        kind, sequence = self._checkpoints.get(shard_id, ("TRIM_HORIZON", None))
        request: dict[str, Any] = {"StreamArn": self._stream_arn, "ShardId": shard_id, "ShardIteratorType": kind}
        if sequence is not None:
            request["SequenceNumber"] = sequence
        iterator = self._client.get_shard_iterator(**request)["ShardIterator"]
        limit = self._bisected.get(shard_id, self._batch_size)
        response = self._client.get_records(ShardIterator=iterator, Limit=limit)
        records = [self._as_lambda_record(record) for record in response.get("Records", [])]
        if not records:
            return 0, False
        self._observe(shard_id, records)
        failures = self._deliver(records).get("batchItemFailures") or []
        if failures:
            # Lambda checkpoints before the first failure and reads again from it.
            failed = min((str(item["itemIdentifier"]) for item in failures), key=_sequence_key)
            succeeded = [r for r in records if _sequence_key(_sequence(r)) < _sequence_key(failed)]
            if not self._give_up(shard_id, failed, records):
                self._checkpoints[shard_id] = ("AT_SEQUENCE_NUMBER", failed)
                if self._bisect:
                    self._bisected[shard_id] = max(1, (len(records) - len(succeeded)) // 2)
                return len(succeeded), False  # retried at the next poll
            self._bisected.pop(shard_id, None)
            self._checkpoints[shard_id] = ("AFTER_SEQUENCE_NUMBER", _sequence(records[-1]))
            return len(succeeded), True
        self._retries = {key: count for key, count in self._retries.items() if key[0] != shard_id}
        self._bisected.pop(shard_id, None)
        self._checkpoints[shard_id] = ("AFTER_SEQUENCE_NUMBER", _sequence(records[-1]))
        return len(records), len(records) >= limit

    def _give_up(self, shard_id: str, failed: str, records: list[dict[str, Any]]) -> bool:
        """Count a retry of the batch starting at `failed`; True once it has used them all."""
        if self._maximum_retry_attempts is None:
            return False
        key = (shard_id, failed)
        retries = self._retries.get(key, 0)
        if retries < self._maximum_retry_attempts:
            self._retries[key] = retries + 1
            first, longest = RETRY_BACKOFF_SECONDS
            self._not_before[shard_id] = time.monotonic() + min(longest, first * 2**retries)
            return False
        self._retries.pop(key, None)
        self._not_before.pop(shard_id, None)
        batch = [record for record in records if _sequence_key(_sequence(record)) >= _sequence_key(failed)]
        if self._on_failure is not None:
            self._on_failure(self._failure_record(shard_id, batch, retries))
        return True

    def _failure_record(self, shard_id: str, batch: list[dict[str, Any]], retries: int) -> dict[str, Any]:
        """What Lambda sends to a stream mapping's OnFailure destination: where the batch is, not the records."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "requestContext": {
                "requestId": "local",
                "functionArn": self._runtime.spec(self._function).arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": retries + 1,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": now,
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": _sequence(batch[0]),
                "endSequenceNumber": _sequence(batch[-1]),
                "approximateArrivalOfFirstRecord": _arrival(batch[0]),
                "approximateArrivalOfLastRecord": _arrival(batch[-1]),
                "batchSize": len(batch),
                "streamArn": self._stream_arn,
            },
        }

    def _observe(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        if self._observer is None:
            return
        last = self._observed.get(shard_id)
        for record in records:
            sequence = _sequence(record)
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


def _sequence(record: dict[str, Any]) -> str:
    return str(record["dynamodb"].get("SequenceNumber", ""))


def _sequence_key(sequence: str) -> tuple[int, str]:
    return (int(sequence), "") if sequence.isdigit() else (0, sequence)


def _arrival(record: dict[str, Any]) -> str | None:
    seconds = record["dynamodb"].get("ApproximateCreationDateTime")
    if not isinstance(seconds, int | float):
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wake_on_stream_records(event: threading.Event) -> None:
    """Set ``event`` whenever moto's DynamoDB appends a record to a table's stream, as Lambda's
    event source mapping picks up a record within moments, not at a poll."""
    from moto.dynamodb.models.table import StreamShard

    wake_after_calls(StreamShard, ("add",), event)
