"""boto3 clients, created once per process. `AWS_ENDPOINT_URL` points them at moto locally."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, wraps
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from conversation_service.models.errors import RetryableError, WriteContention

_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


@cache
def client(service: str) -> Any:
    return boto3.client(service, config=_CLIENT_CONFIG)


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in values.items() if value is not None}


def to_attribute(value: Any) -> dict[str, Any]:
    return _serializer.serialize(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | set | frozenset):
        return [_plain(item) for item in value]
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}


def error_code(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


CONDITION_FAILED = "ConditionalCheckFailedException"
TRANSACTION_CANCELED = "TransactionCanceledException"
# A cancelled transaction names, per item, why: this one is its item's condition refused.
ITEM_CONDITION_FAILED = "ConditionalCheckFailed"
# Codes AWS answers when trying again later can succeed (throttling, conflicts, its own 5xx),
# across the services we call (DynamoDB, Step Functions, ECS, EventBridge, S3, KMS).
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "TransactionConflictException",
        "TransactionInProgressException",
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)


def is_transient(error: BaseException) -> bool:
    """The one rule for which AWS failures are worth trying again: throttling and transaction
    conflicts, any 5xx, and the network giving up (timeouts, refused connections)."""
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return error_code(error) in TRANSIENT_CODES or status >= 500
    return isinstance(error, HTTPClientError | BotocoreConnectionError)


# What a transaction item's refused condition means, given its cancellation reason (which holds
# the item as it was when the item asked ReturnValuesOnConditionCheckFailure=ALL_OLD).
Refusal = Callable[[dict[str, Any]], Exception]


@dataclass(frozen=True)
class Guarded:
    """A TransactWriteItems item and the domain error its refused condition means."""

    item: dict[str, Any]
    refused: Refusal


def domain_error(
    error: BaseException,
    *,
    condition_refused: Callable[[], Exception] | None = None,
    items: Sequence[Guarded] = (),
) -> Exception | None:
    """The one translation from an AWS failure to a domain error (models/errors.py), by code:

    - a single write whose condition failed: `condition_refused()`, when the caller gives it one;
    - a cancelled transaction: what the first item whose condition failed says it means
      (`items`, in the transaction's order); cancelled for anything else (a conflicting
      transaction, throttling): WriteContention;
    - a transient failure (`is_transient`): WriteContention;
    - None for anything else: a bug or a deployment problem, which surfaces unchanged.
    """
    code = error_code(error)
    if code == CONDITION_FAILED and condition_refused is not None:
        return condition_refused()
    if code == TRANSACTION_CANCELED and isinstance(error, ClientError):
        reasons = error.response.get("CancellationReasons", [])
        for guarded, reason in zip(items, reasons, strict=False):
            if reason.get("Code") == ITEM_CONDITION_FAILED:
                return guarded.refused(reason)
        return WriteContention(code)
    if is_transient(error):
        return WriteContention(code or "the network gave up")
    return None


@contextmanager
def translated(
    *, condition_refused: Callable[[], Exception] | None = None, items: Sequence[Guarded] = ()
) -> Iterator[None]:
    """AWS failures inside become domain errors (`domain_error`); the rest pass unchanged."""
    try:
        yield
    except Exception as error:
        domain = domain_error(error, condition_refused=condition_refused, items=items)
        if domain is None:
            raise
        raise domain from error


def written_if(operation: str, **request: Any) -> dict[str, Any] | None:
    """A conditional DynamoDB write (`update_item`, `delete_item`, `put_item`): its response, or
    None when its condition did not hold."""
    try:
        return dict(getattr(client("dynamodb"), operation)(**request))
    except Exception as error:
        if error_code(error) == CONDITION_FAILED:
            return None
        domain = domain_error(error)
        if domain is None:
            raise
        raise domain from error


def write_if(operation: str, **request: Any) -> bool:
    """A conditional DynamoDB write: False when its condition did not hold."""
    return written_if(operation, **request) is not None


def transact(items: Sequence[Guarded]) -> None:
    """One TransactWriteItems; a refused condition raises what its item says it means."""
    with translated(items=items):
        client("dynamodb").transact_write_items(TransactItems=[guarded.item for guarded in items])


@contextmanager
def aws_failures_translated() -> Iterator[None]:
    """For a workflow step: transient AWS failures (and the stores' own contention) become
    RetryableError, the one name the state machine's Retry clauses list; the rest pass unchanged."""
    try:
        with translated():
            yield
    except WriteContention as contention:
        raise RetryableError(f"transient AWS failure: {contention}") from contention


def retried_by_the_workflow[**P, R](step: Callable[P, R]) -> Callable[P, R]:
    """A workflow step whose transient AWS failures the state machine retries (RetryableError)."""

    @wraps(step)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with aws_failures_translated():
            return step(*args, **kwargs)

    return run
