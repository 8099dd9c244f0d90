"""Conversation ids: uuid4 hex, written with a conditional put (a collision silently draws a new
one), and ids in paths checked against the spec's rules with a message naming the broken rule."""

from __future__ import annotations

import uuid

import pytest

from tests.emulated.support import (
    CONVERSATIONS,
    ApiResponse,
    call_api,
    create,
    get_conversation,
)
from tests.support.api_gateway import api_event


def test_ids_are_uuid4_hex(user) -> None:
    ids = {create({}).body["conversation_id"] for _ in range(3)}
    assert len(ids) == 3
    for conversation_id in ids:
        parsed = uuid.UUID(hex=conversation_id)
        assert parsed.version == 4 and parsed.hex == conversation_id


# -- ids in paths --------------------------------------------------------------------------------
# As a client sends them: the path is percent-encoded, and API Gateway REST delivers it so.
INVALID_PATH_IDS = [
    ("abc%01def", "control characters"),
    ("a%5Cb", "invalid path characters"),
    ("a%2Fb", "invalid path characters"),
    ("..", "invalid path characters"),
    ("%2E%2E", "invalid path characters"),
    ("abc..def", "invalid path characters"),
    ("abc%00def", "null byte"),
    ("abc%0Adef", "control characters"),
    ("abc%1Fdef", "control characters"),
    ("abc\\def", "invalid path characters"),  # a backslash some clients leave unencoded
    ("a" * 101, "longer than 100"),
    ("a" * 150, "longer than 100"),
    ("a" * 250, "longer than 100"),
    ("%61" * 101, "longer than 100"),  # the limit counts decoded characters
]


def _refused_for(response: ApiResponse, rule: str) -> None:
    assert response.status == 400, response.body
    assert response.body["status"] == "error"
    assert response.body["msg_id"] == "ERROR$INVALID_CONVERSATION_ID"
    assert rule in response.body["message"], response.body


@pytest.mark.parametrize(("encoded_id", "rule"), INVALID_PATH_IDS)
def test_invalid_path_ids_are_refused_naming_the_rule(user, encoded_id: str, rule: str) -> None:
    _refused_for(get_conversation(encoded_id), rule)


def _conversation_routes() -> list[tuple[str, str]]:
    from api.app import openapi_schema

    return [
        (method.upper(), path)
        for path, operations in openapi_schema()["paths"].items()
        if "{conversation_id}" in path
        for method in operations
    ]


def test_every_route_with_a_conversation_id_applies_the_rule(user) -> None:
    """Every route, including ones added later: the resolver checks the parameter by its name,
    before the body is validated (an invalid body does not turn the answer into 422)."""
    routes = _conversation_routes()
    assert len(routes) >= 5, routes
    for method, template in routes:
        for encoded_id, rule in INVALID_PATH_IDS:
            path = template.replace("{conversation_id}", encoded_id)
            response = call_api(api_event(method, path, raw_body="not json" if method != "GET" else None))
            assert response.status == 400, (method, path, response.body)
            _refused_for(response, rule)


def test_a_path_no_route_matches_still_names_the_id_rule(user) -> None:
    _refused_for(call_api(api_event("GET", f"{CONVERSATIONS}/a%5Cb/no-such-action")), "invalid path characters")
    assert call_api(api_event("GET", f"{CONVERSATIONS}/{uuid.uuid4().hex}/no-such-action")).status == 404


def test_an_encoded_valid_id_is_decoded_once(user) -> None:
    conversation_id = create({}).body["conversation_id"]
    encoded = "".join(f"%{ord(char):02X}" for char in conversation_id)
    response = get_conversation(encoded)
    assert response.status == 200, response.body
    assert response.body["conversation_id"] == conversation_id
    # Decoded once: "%2561" is the id "%61", not "a".
    assert get_conversation("%2561").status == 404


def test_a_valid_but_unknown_id_is_not_found(user) -> None:
    response = get_conversation(uuid.uuid4().hex)
    assert response.status == 404
    assert response.body == {"status": "error", "message": "Conversation not found", "msg_id": "CONVERSATION$NOT_FOUND"}


def test_a_hundred_characters_is_still_an_id(user) -> None:
    assert get_conversation("a" * 100).status == 404
