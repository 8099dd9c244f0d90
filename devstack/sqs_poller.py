"""Lambda's SQS event source mapping: receive a batch from a queue, hand it to the function in
the Lambda SQS event shape, then delete what succeeded.

With `ReportBatchItemFailures` the messages the function lists in `batchItemFailures` are left
on the queue: SQS delivers them again after their visibility timeout, and the queue's redrive
policy moves one that was received `maxReceiveCount` times to its dead-letter queue. An
unhandled error leaves the whole batch. Without `ReportBatchItemFailures` any failure is the
whole batch's, as in Lambda.

Receives are short (WaitTimeSeconds=0): the local moto serves one request at a time, and a long
poll would hold every other AWS call back for its duration.
"""

from __future__ import annotations

import base64
from typing import Any

import boto3

from devstack.lambda_runtime import FunctionError, LocalLambdaRuntime
from devstack.template_resources import REGION

DEFAULT_BATCH_SIZE = 10  # Lambda's default for SQS


class SqsEventSource:
    def __init__(
        self,
        queue_url: str,
        queue_arn: str,
        runtime: LocalLambdaRuntime,
        function: str,
        session: boto3.Session,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        report_batch_item_failures: bool = True,
        visibility_timeout: int | None = None,
    ) -> None:
        """`visibility_timeout` overrides the queue's for the received messages (tests use 0 to
        see a failed message again at once); None keeps the queue's, as Lambda does."""
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self._runtime = runtime
        self._function = function
        self._batch_size = min(batch_size, 10)  # one ReceiveMessage returns at most 10
        self._report_failures = report_batch_item_failures
        self._visibility_timeout = visibility_timeout
        self._sqs = session.client("sqs")

    def poll_once(self) -> dict[str, Any]:
        """One receive and, if it got messages, one invocation. Returns the function's answer
        (`batchItemFailures`) and how many records it was given (`records`)."""
        request: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": self._batch_size,
            "AttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
            "WaitTimeSeconds": 0,
        }
        if self._visibility_timeout is not None:
            request["VisibilityTimeout"] = self._visibility_timeout
        messages = self._sqs.receive_message(**request).get("Messages", [])
        if not messages:
            return {"batchItemFailures": [], "records": 0}
        return self.deliver(messages)

    def deliver(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Invoke the function with these received messages; delete the ones that succeeded."""
        records = [self.lambda_record(message) for message in messages]
        everything_failed = {"batchItemFailures": [{"itemIdentifier": record["messageId"]} for record in records]}
        try:
            answer = self._runtime.invoke(self._function, {"Records": records})
        except FunctionError:
            return {**everything_failed, "records": len(records)}
        result = dict(answer) if isinstance(answer, dict) else {}
        failures = (result.get("batchItemFailures") or []) if self._report_failures else []
        failed = {str(item.get("itemIdentifier")) for item in failures}
        if "" in failed or "None" in failed:
            # Lambda treats an empty or missing identifier as the whole batch failing.
            return {**everything_failed, "records": len(records)}
        for message in messages:
            if message["MessageId"] not in failed:
                self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return {**result, "batchItemFailures": list(failures), "records": len(records)}

    def lambda_record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {
                name: _attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": REGION,
        }


def _attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A message attribute as Lambda's SQS event spells it (camelCase)."""
    converted: dict[str, Any] = {
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": value.get("BinaryListValues", []),
        "dataType": value.get("DataType", "String"),
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        binary = value["BinaryValue"]
        converted["binaryValue"] = base64.b64encode(binary).decode() if isinstance(binary, bytes) else binary
    return converted
