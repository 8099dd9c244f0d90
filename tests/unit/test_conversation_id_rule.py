"""The conversation-id rule (logic/validation.py) against the spec, the ids the service draws, and
the local gateway building events as API Gateway REST does (the routes: tests/emulated)."""

from __future__ import annotations

import string
import uuid

from conversation_service.logic.validation import validate_conversation_id
from conversation_service.models.errors import InvalidConversationId
from hypothesis import example, given, settings
from hypothesis import strategies as st


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
