"""Conversation ids: uuid4 hex, written with a conditional put (a collision silently draws a new
one), and ids in paths checked against the spec's rules with a message naming the broken rule."""

from __future__ import annotations

import string
import uuid
from collections.abc import Iterator

import pytest
from conversation_service import services
from conversation_service.config import get_config
from conversation_service.dal.context_store import ContextStore
from conversation_service.logic.conversations import ConversationService
from conversation_service.logic.validation import validate_conversation_id
from conversation_service.models.api import CreateConversationRequest
from conversation_service.models.errors import InvalidConversationId
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.emulated.support import (
    CONVERSATIONS,
    ApiResponse,
    call_api,
    configure_user,
    conversation_item,
    create,
    get_conversation,
)
from tests.helpers import api_event


def test_ids_are_uuid4_hex(user) -> None:
    ids = {create({}).body["conversation_id"] for _ in range(3)}
    assert len(ids) == 3
    for conversation_id in ids:
        parsed = uuid.UUID(hex=conversation_id)
        assert parsed.version == 4 and parsed.hex == conversation_id


def service_with_ids(ids: Iterator[str]) -> ConversationService:
    config = get_config()
    return ConversationService(
        config,
        services.conversation_store(),
        services.user_store(),
        ContextStore(config.context_bucket),
        id_factory=lambda: next(ids),
    )


def test_a_colliding_id_silently_yields_a_fresh_one(user, tables) -> None:
    configure_user("user-2")
    taken = create({"initial_user_msg": "first"}).body["conversation_id"]
    before = conversation_item(tables["conversations"], taken)
    fresh = uuid.uuid4().hex
    drawn: list[str] = []

    def ids() -> Iterator[str]:
        for conversation_id in (taken, taken, fresh):
            drawn.append(conversation_id)
            yield conversation_id

    response = service_with_ids(ids()).create("user-2", CreateConversationRequest(initial_user_msg="second"))
    assert response.conversation_id == fresh
    assert drawn == [taken, taken, fresh]
    # The first conversation is untouched; the second exists under the fresh id.
    assert conversation_item(tables["conversations"], taken) == before
    second = conversation_item(tables["conversations"], fresh)
    assert second["user_id"] == {"S": "user-2"}
    assert second["request"]["M"]["initial_user_msg"] == {"S": "second"}
    assert get_conversation(taken, user_id="user-1").status == 200
    assert get_conversation(fresh, user_id="user-2").status == 200


def test_a_collision_at_the_limit_also_yields_a_fresh_id(user, tables) -> None:
    existing = [create({}).body["conversation_id"] for _ in range(3)]
    before = conversation_item(tables["conversations"], existing[2])
    fresh = uuid.uuid4().hex
    response = service_with_ids(iter([existing[2], fresh])).create("user-1", CreateConversationRequest())
    assert response.conversation_id == fresh
    assert conversation_item(tables["conversations"], existing[2]) == before
    assert conversation_item(tables["conversations"], fresh)["conversation_status"] == {"S": "STARTING"}
    # The least recently active one made room, as for any fourth conversation.
    assert conversation_item(tables["conversations"], existing[0])["conversation_status"] == {"S": "STOPPED"}


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


def spec_allows(conversation_id: str) -> bool:
    """The spec: at most 100 characters, no '..', '/' or '\\', no control characters (< 32).
    We also count DEL (127) as a control character."""
    return (
        0 < len(conversation_id) <= 100
        and ".." not in conversation_id
        and "/" not in conversation_id
        and "\\" not in conversation_id
        and not any(ord(char) < 32 or ord(char) == 127 for char in conversation_id)
    )


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(
            string.ascii_letters + string.digits + "-_.:/\\~ é" + "".join(map(chr, range(0, 32))) + "\x7f"
        ),
        max_size=110,
    )
    | st.text(alphabet=string.hexdigits.lower(), min_size=95, max_size=105)
)
@example("a" * 100)
@example("a" * 101)
@example(".")
@example("a.b")
@example("..")
@example("\x7f")
def test_validate_conversation_id_follows_the_spec(conversation_id: str) -> None:
    try:
        validate_conversation_id(conversation_id)
    except InvalidConversationId:
        accepted = False
    else:
        accepted = True
    assert accepted == spec_allows(conversation_id), repr(conversation_id)


@settings(max_examples=100, deadline=None)
@given(st.uuids(version=4))
def test_every_generated_id_is_valid(value: uuid.UUID) -> None:
    assert validate_conversation_id(value.hex) == value.hex


def test_the_local_gateway_builds_events_as_api_gateway_rest_does() -> None:
    """devstack: `path` keeps the client's encoding, `pathParameters` are decoded."""
    from devstack.api_gateway import Route, proxy_event

    event = proxy_event(
        method="GET",
        target="/api/conversations/a%2Fb%01c?limit=5",
        headers=[("Host", "127.0.0.1")],
        body=b"",
        route=Route("/api/", "/api/{proxy+}", "ApiFunction", None),
        stage="dev",
        source_ip="127.0.0.1",
        domain="127.0.0.1",
        authorizer=None,
    )
    assert event["path"] == "/api/conversations/a%2Fb%01c"
    assert event["requestContext"]["path"] == "/dev/api/conversations/a%2Fb%01c"
    assert event["pathParameters"] == {"proxy": "conversations/a/b\x01c"}
    assert event["queryStringParameters"] == {"limit": "5"}
