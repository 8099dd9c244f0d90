"""API Gateway TOKEN authorizer: `Authorization: Bearer <key>` -> the key's user id.

Keys are stored as SHA-256 hashes; the plain key is never stored or logged.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerResponse,
    APIGatewayAuthorizerTokenEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from conversation_service.config import require_environment
from conversation_service.logic.identity import api_key_hash
from conversation_service.models.environment import AuthorizerEnvironment
from conversation_service.observability import logger
from conversation_service.services import user_store

# Checked while Lambda imports the module: a missing variable fails the cold start, named.
ENVIRONMENT = require_environment(AuthorizerEnvironment)

BEARER = "bearer "


@logger.inject_lambda_context(log_event=False)
@event_source(data_class=APIGatewayAuthorizerTokenEvent)
def lambda_handler(event: APIGatewayAuthorizerTokenEvent, context: LambdaContext) -> dict[str, Any]:
    # .get: an event without the token must be a 401 (Unauthorized), not a KeyError (a 500).
    token = str(event.get("authorizationToken") or "")
    if not token.lower().startswith(BEARER) or len(token) > 512:
        raise Exception("Unauthorized")  # API Gateway answers 401 for exactly this message
    user_id = user_store().find_user_by_api_key_hash(api_key_hash(token[len(BEARER) :].strip()))
    if user_id is None:
        logger.info("api key refused")
        raise Exception("Unauthorized")
    arn = event.parsed_arn
    policy = APIGatewayAuthorizerResponse(
        principal_id=user_id,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context={"user_id": user_id},
    )
    policy.allow_all_routes()
    return policy.asdict()
