"""Idempotency-Key handling shared by the API's writes (create a conversation, send a message):
Powertools' idempotent_function on the DynamoDB idempotency table, keyed by the caller's user id
and key, with the request body as the payload a reused key must match."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from conversation_service.models.errors import IdempotencyConflict, InvalidRequest, RequestInProgress

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

# Powertools idempotency (with its JMESPath and persistence machinery) is imported only where a
# keyed write is built or run: checking a key's shape must not load it (services.py).

MAX_IDEMPOTENCY_KEY_LENGTH = 255


def check_idempotency_key(key: str) -> None:
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")


def make_idempotent[Model: BaseModel](
    function: Callable[..., Model],
    store: BasePersistenceLayer,
    *,
    key_path: str,
    output_model: type[Model],
    expires_after_seconds: int,
) -> tuple[Callable[..., Model], IdempotencyConfig]:
    """`function(envelope=...)` run once per key: `key_path` (JMESPath into the envelope) names
    the key, the envelope's `body` is what a repeat must match. Returns the wrapped function and
    its config (to register the Lambda context on)."""
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer

    config = IdempotencyConfig(
        event_key_jmespath=key_path,
        payload_validation_jmespath="body",
        expires_after_seconds=expires_after_seconds,
    )
    wrapped = idempotent_function(
        data_keyword_argument="envelope",
        persistence_store=store,
        config=config,
        output_serializer=PydanticSerializer(model=output_model),
    )(function)
    return wrapped, config


def run_once[Model: BaseModel](call: Callable[..., Model], envelope: dict[str, Any]) -> Model:
    """Call an idempotent function; a reused key with another body, or one still in progress,
    becomes the API's 409."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    try:
        return call(envelope=envelope)
    except IdempotencyValidationError as error:
        raise IdempotencyConflict() from error
    except IdempotencyAlreadyInProgressError as error:
        raise RequestInProgress() from error
