"""Who is calling: the user id the Lambda authorizer put on the request context.

The deployed API always has an authorizer. Only the local stack sets `local_user_id`,
so that one person on a laptop needs no key, as OpenHands does.
"""

from __future__ import annotations

import hashlib
from typing import Any

from conversation_service.config import ServiceConfig
from conversation_service.models.errors import Unauthorized


def caller_user_id(request_context: dict[str, Any], config: ServiceConfig) -> str:
    authorizer = request_context.get("authorizer") or {}
    user_id = authorizer.get("user_id") or authorizer.get("principalId")
    if user_id:
        return str(user_id)
    if config.local_user_id:
        return config.local_user_id
    raise Unauthorized()


def api_key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()
