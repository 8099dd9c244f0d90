"""GET /api/conversations: newest first, pages that cover everything once, filters, and page
tokens that only continue the listing they came from, for the user they were issued to."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tests.lifecycle.conftest import CONVERSATIONS, OTHER_USER, USER, Lifecycle


def listing(life: Lifecycle, user: str = USER, **query: Any) -> tuple[int, Any]:
    return life.call("GET", CONVERSATIONS, user=user, query={key: str(value) for key, value in query.items()})


def every_page(life: Lifecycle, user: str = USER, **query: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    page_id = None
    while True:
        status, page = listing(life, user, **query, **({"page_id": page_id} if page_id else {}))
        assert status == 200, page
        pages.append(page["results"])
        page_id = page["next_page_id"]
        if page_id is None:
            return pages
        assert len(pages) < 50, "the listing does not end"


def test_pages_cover_every_conversation_once_newest_first(life: Lifecycle) -> None:
    created = [life.create({"initial_user_msg": f"task {number}"}) for number in range(7)]
    theirs = {life.create(user=OTHER_USER) for _ in range(2)}
    pages = every_page(life, limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [item["conversation_id"] for page in pages for item in page]
    assert listed == list(reversed(created))
    assert not theirs & set(listed)
    first = pages[0][0]
    assert first["status"] == first["conversation_status"] == "STARTING"
    assert first["title"].startswith("Conversation ") and first["trigger"] == "api"
    assert {"created_at", "last_updated_at", "runtime_status", "selected_repository", "url"} <= set(first)
    # The other user's listing holds theirs only.
    assert {item["conversation_id"] for page in every_page(life, OTHER_USER) for item in page} == theirs


def test_limit_is_1_to_100_and_defaults_to_20(life: Lifecycle) -> None:
    for _ in range(21):
        life.create()
    status, page = listing(life)
    assert status == 200 and len(page["results"]) == 20 and page["next_page_id"]
    status, rest = listing(life, page_id=page["next_page_id"])
    assert status == 200 and len(rest["results"]) == 1 and rest["next_page_id"] is None
    for bad in ("0", "101", "-1", "many"):
        status, body = listing(life, limit=bad)
        assert status == 422, (bad, body)
        assert body["msg_id"] == "ERROR$VALIDATION"
    status, page = listing(life, limit=100)
    assert status == 200 and len(page["results"]) == 21 and page["next_page_id"] is None


def test_an_exact_last_page_has_no_next_page(life: Lifecycle) -> None:
    for _ in range(4):
        life.create()
    assert [len(page) for page in every_page(life, limit=2)] == [2, 2]
    status, empty = listing(life, OTHER_USER)
    assert status == 200 and empty == {"results": [], "next_page_id": None}


def test_filters_by_repository_and_trigger(life: Lifecycle, repository: Path) -> None:
    plain = life.create()
    with_repo = life.create({"repository": str(repository)})
    task = {"issue_number": 1, "repo": str(repository), "title": "Fix the build", "task_type": "FAILING_CHECKS"}
    suggested = life.create({"suggested_task": task})
    display = life.view(with_repo)["repository"]
    assert display and life.view(suggested)["repository"] == display

    by_repo = [item["conversation_id"] for page in every_page(life, selected_repository=display) for item in page]
    assert by_repo == [suggested, with_repo]
    for page in every_page(life, selected_repository=display):
        assert all(item["selected_repository"] == display for item in page)
    by_trigger = every_page(life, conversation_trigger="suggested_task")
    assert [item["conversation_id"] for page in by_trigger for item in page] == [suggested]
    api_only = every_page(life, conversation_trigger="api", selected_repository=display)
    assert [item["conversation_id"] for page in api_only for item in page] == [with_repo]
    # Paging within a filter: one at a time, still exact.
    one_by_one = every_page(life, conversation_trigger="api", limit=1)
    assert [item["conversation_id"] for page in one_by_one for item in page] == [with_repo, plain]
    assert every_page(life, selected_repository="nobody/nothing") == [[]]
    status, body = listing(life, conversation_trigger="carrier_pigeon")
    assert status == 422, body


def test_page_tokens_are_bound_to_their_user_and_filters(life: Lifecycle) -> None:
    for _ in range(3):
        life.create()
        life.create(user=OTHER_USER)
    status, page = listing(life, limit=1)
    token = page["next_page_id"]
    assert status == 200 and token

    status, body = listing(life, OTHER_USER, limit=1, page_id=token)  # someone else's token
    assert (status, body["msg_id"]) == (400, "ERROR$INVALID_PAGE_ID"), body
    blob = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    blob[len(blob) // 2] ^= 0x01
    tampered = base64.urlsafe_b64encode(bytes(blob)).decode().rstrip("=")
    for forged in (tampered, "not-a-token", "A" * 300, token[:-4]):
        status, body = listing(life, limit=1, page_id=forged)
        assert (status, body["msg_id"]) == (400, "ERROR$INVALID_PAGE_ID"), (forged, body)
    status, body = listing(life, limit=1, page_id=token, conversation_trigger="api")  # other filters
    assert (status, body["msg_id"]) == (400, "ERROR$INVALID_PAGE_ID"), body
    # The owner, with the same filters, continues where the page ended.
    status, second = listing(life, limit=1, page_id=token)
    assert status == 200 and second["results"][0]["conversation_id"] != page["results"][0]["conversation_id"]
