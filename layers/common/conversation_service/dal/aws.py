"""boto3 clients, created once per process. `AWS_ENDPOINT_URL` points them at moto locally."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import cache, wraps
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from conversation_service.models.errors import RetryableError

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


def error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "TransactionInProgressException",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


def is_transient(error: BaseException) -> bool:
    """The one rule for which AWS failures are worth trying again: throttling and transaction
    conflicts, any 5xx, and the network giving up (timeouts, refused connections)."""
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return error_code(error) in THROTTLING_CODES or status >= 500
    return isinstance(error, HTTPClientError | BotocoreConnectionError)


@contextmanager
def aws_failures_translated() -> Iterator[None]:
    """Transient AWS failures (and the stores' own contention) become RetryableError; the rest
    pass unchanged."""
    from conversation_service.dal.conversations import WriteContention

    try:
        yield
    except WriteContention as contention:
        raise RetryableError(f"contention: {contention}") from contention
    except Exception as error:
        if is_transient(error):
            raise RetryableError(f"transient AWS failure: {error_code(error) or type(error).__name__}") from error
        raise


def retried_by_the_workflow[**P, R](step: Callable[P, R]) -> Callable[P, R]:
    """A workflow step whose transient AWS failures the state machine retries (RetryableError)."""

    @wraps(step)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with aws_failures_translated():
            return step(*args, **kwargs)

    return run
