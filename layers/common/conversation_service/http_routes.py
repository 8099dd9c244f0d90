"""The REST resolver every HTTP function uses: path parameters decoded once and checked once.

API Gateway REST delivers `event.path` still percent-encoded (`/api/conversations/abc%01def`)
while its `pathParameters` are decoded. Powertools routes on `path`, so without this a route
parameter would arrive encoded (`abc%01def` passes every rule and answers 404). Here each
dynamic segment matches anything up to the next `/` of the encoded path, is decoded exactly
once (as API Gateway decodes `pathParameters`: `%2F` becomes `/`, `+` stays `+`), and is
checked by the rule registered for its name before the route, its body or its query is looked at.
A new route with a `<conversation_id>` segment gets the rule for free.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.api_gateway import ResponseBuilder, Route

from conversation_service.logic.validation import validate_conversation_id
from conversation_service.models.errors import ServiceError

PathParameterRule = Callable[[str], Any]

# Parameter name -> the rule its decoded value must pass (raises a ServiceError naming the rule).
PATH_PARAMETER_RULES: dict[str, PathParameterRule] = {
    "conversation_id": validate_conversation_id,
}

_DYNAMIC_SEGMENT = re.compile(r"<(\w+)>")


def decode_path_parameters(encoded: dict[str, str]) -> dict[str, str]:
    """Decode each parameter once and apply its rule; raises the rule's ServiceError."""
    decoded = {name: unquote(value) for name, value in encoded.items()}
    for name, value in decoded.items():
        if rule := PATH_PARAMETER_RULES.get(name):
            rule(value)
    return decoded


class ServiceApiResolver(APIGatewayRestResolver):
    """`APIGatewayRestResolver` whose route parameters are the decoded, validated values."""

    @staticmethod
    def _compile_regex(rule: str, base_regex: str = "^{}/*$") -> re.Pattern[str]:
        # Powertools' own segment pattern leaves out characters a client may send unencoded
        # (a backslash, a quote): such an id would answer 404 instead of naming its rule.
        return re.compile(base_regex.format(_DYNAMIC_SEGMENT.sub(r"(?P<\1>[^/]+)", rule)))

    def _call_route(self, route: Route, route_arguments: dict[str, str]) -> ResponseBuilder:
        try:
            arguments = decode_path_parameters(route_arguments)
        except ServiceError as error:
            refused = error

            # Through the same chain as any route, so the one error handler answers.
            def refuse() -> None:
                raise refused

            refusal = Route(
                method=route.method,
                path=route.path,
                rule=route.rule,
                func=refuse,
                cors=route.cors,
                compress=False,
                enable_validation=False,
            )
            self.append_context(_route=refusal)
            return super()._call_route(refusal, {})
        return super()._call_route(route, arguments)
