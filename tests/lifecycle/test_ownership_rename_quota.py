"""Every endpoint is the owner's only: anyone else gets the 404 a missing conversation gets, and
nothing changes. Renaming, and the quota."""

from __future__ import annotations

import uuid

import pytest

from tests.lifecycle.conftest import CONVERSATIONS, OTHER_USER, USER, Lifecycle

ENDPOINTS = [
    ("GET", "", None),
    ("PATCH", "", {"title": "mine now"}),
    ("POST", "/stop", None),
    ("POST", "/start", None),
    ("DELETE", "", None),
]


@pytest.mark.parametrize(("method", "suffix", "body"), ENDPOINTS, ids=[f"{m} {s or '/'}" for m, s, _ in ENDPOINTS])
def test_someone_elses_conversation_answers_as_a_missing_one(
    life: Lifecycle, method: str, suffix: str, body: dict[str, str] | None
) -> None:
    conversation_id = life.create()
    before = life.view(conversation_id)
    missing = life.call(method, f"{CONVERSATIONS}/{uuid.uuid4().hex}{suffix}", body, user=OTHER_USER)
    foreign = life.call(method, f"{CONVERSATIONS}/{conversation_id}{suffix}", body, user=OTHER_USER)
    assert foreign == missing
    assert foreign[0] == 404 and foreign[1]["msg_id"] == "CONVERSATION$NOT_FOUND"
    after = life.view(conversation_id)
    assert after == before
    assert life.active_count(USER) == 1 and life.active_count(OTHER_USER) == 0


def test_listing_and_quota_show_only_your_own(life: Lifecycle) -> None:
    life.create()
    status, page = life.call("GET", CONVERSATIONS, user=OTHER_USER)
    assert status == 200 and page["results"] == []
    assert life.call("GET", "/api/quota", user=OTHER_USER)[1]["active"] == 0


def test_rename(life: Lifecycle) -> None:
    conversation_id = life.create()
    path = f"{CONVERSATIONS}/{conversation_id}"
    assert life.call("PATCH", path, {"title": "  Fix the flaky parser test  "}) == (200, True)
    view = life.view(conversation_id)
    assert view["title"] == "Fix the flaky parser test"
    assert life.call("GET", CONVERSATIONS)[1]["results"][0]["title"] == "Fix the flaky parser test"
    assert life.call("PATCH", path, {"title": "x" * 200})[0] == 200
    for bad in ({"title": ""}, {"title": "   "}, {"title": "x" * 201}, {"title": "a\nb"}, {}, {"title": "t", "x": 1}):
        status, body = life.call("PATCH", path, bad)
        assert status == 422 and body["msg_id"] == "ERROR$VALIDATION", (bad, body)
    assert life.view(conversation_id)["title"] == "x" * 200
    status, body = life.call("PATCH", f"{CONVERSATIONS}/..%2Fetc", {"title": "t"})
    assert status in (400, 404), body


def test_quota_counts_active_conversations(life: Lifecycle) -> None:
    assert life.call("GET", "/api/quota") == (
        200,
        {"limit": 3, "active": 0, "available": 3, "policy": "close_oldest"},
    )
    first = life.create()
    life.create()
    assert life.call("GET", "/api/quota")[1] == {"limit": 3, "active": 2, "available": 1, "policy": "close_oldest"}
    assert life.call("POST", f"{CONVERSATIONS}/{first}/stop")[0] == 200
    assert life.call("GET", "/api/quota")[1]["active"] == 1
    for _ in range(4):  # beyond the limit: close_oldest keeps it at the limit
        life.create()
    assert life.call("GET", "/api/quota")[1] == {"limit": 3, "active": 3, "available": 0, "policy": "close_oldest"}
    # A user without settings has the default limit and nothing active.
    assert life.call("GET", "/api/quota", user="nobody")[1]["active"] == 0
