"""The local stack runs every function's invocations in threads of one process; Powertools keeps
the request being resolved on its BaseRouter class. Two requests resolved at once must each see
their own headers (a sandbox fetching its context read another sandbox's token before this)."""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from devstack.lambda_runtime import keep_powertools_router_state_per_thread


def rest_event(token: str) -> dict[str, Any]:
    return {
        "resource": "/whoami",
        "path": "/whoami",
        "httpMethod": "GET",
        "headers": {"authorization": token},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "requestContext": {"path": "/whoami", "stage": "local", "httpMethod": "GET", "resourcePath": "/whoami"},
        "body": None,
        "isBase64Encoded": False,
    }


def test_two_requests_resolved_at_once_each_see_their_own_headers() -> None:
    keep_powertools_router_state_per_thread()
    # Two resolvers, as two execution environments (module copies) of one function have.
    resolvers = [APIGatewayRestResolver(), APIGatewayRestResolver()]
    both_inside = threading.Barrier(2, timeout=10)
    for app in resolvers:

        @app.get("/whoami")
        def whoami(app: APIGatewayRestResolver = app) -> dict[str, str]:
            before = app.current_event.headers["authorization"]
            both_inside.wait()  # the other request has been resolved into the router meanwhile
            both_inside.wait()
            return {"before": before, "after": app.current_event.headers["authorization"]}

    answers: dict[str, str] = {}

    def call(index: int) -> None:
        answers[f"token-{index}"] = resolvers[index].resolve(rest_event(f"token-{index}"), None)["body"]

    threads = [threading.Thread(target=call, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert answers == {
        "token-0": '{"before":"token-0","after":"token-0"}',
        "token-1": '{"before":"token-1","after":"token-1"}',
    }
