"""The transcript: agent events stored in order, once per event id, within the caps, big bodies in
S3, readable page by page and after the sandbox stops, by the owner only."""

from __future__ import annotations

import threading

import pytest
from conversation_service import services

from tests.channel.conftest import agent_event, channel_items, event_objects, open_channel, set_limits
from tests.lifecycle.conftest import OTHER_USER, Lifecycle


def test_events_in_order_once_readable_after_stop_owner_only(life: Lifecycle) -> None:
    channel = open_channel(life)
    first = [agent_event(2), agent_event(0), agent_event(1)]  # one batch: ordered by timestamp
    status, body = channel.post_events(first)
    assert (status, body) == (200, {"status": "ok", "stored": 3, "duplicates": 0, "refused": []})
    status, body = channel.post_events([agent_event(1), agent_event(3), agent_event(3)])  # redelivery + new
    assert (status, body["stored"], body["duplicates"]) == (200, 1, 1)
    assert channel.post_events(first)[1]["stored"] == 0  # a whole batch again

    page = channel.events_page(limit=2)
    assert [event["event"]["llm_message"]["content"][0]["text"] for event in page["results"]] == ["step 0", "step 1"]
    envelope = page["results"][0]
    assert set(envelope) == {"id", "timestamp", "source", "kind", "event", "error_code"}
    assert (envelope["id"], envelope["source"], envelope["kind"]) == (agent_event(0)["id"], "agent", "MessageEvent")
    assert envelope["event"] == agent_event(0)  # the agent-server's JSON, unchanged
    rest = channel.events_page(page_id=page["next_page_id"], limit=10)
    assert [event["id"] for event in rest["results"]] == [agent_event(2)["id"], agent_event(3)["id"]]
    end = channel.events_page(page_id=rest["next_page_id"])
    assert end == {"results": [], "next_page_id": rest["next_page_id"]}  # the cursor to follow from

    assert channel.api("GET", "/events", user=OTHER_USER)[0] == 404
    status, body = channel.api("GET", "/events", query={"page_id": "not-a-cursor"})
    assert (status, body["status"], body["msg_id"]) == (400, "error", "ERROR$INVALID_PAGE_ID")

    assert channel.api("POST", "/stop")[0] == 200
    life.settle()
    assert [event["id"] for event in channel.transcript(limit=3)] == [agent_event(i)["id"] for i in range(4)]
    status, body = channel.post_events([agent_event(9)])  # the token ends with the run
    assert (status, body["msg_id"]) == (401, "ERROR$UNAUTHORIZED")


def test_following_a_conversation_with_wait(life: Lifecycle) -> None:
    channel = open_channel(life)
    cursor = channel.events_page()["next_page_id"]
    poster = threading.Timer(0.8, lambda: channel.post_events([agent_event(7)]))
    poster.start()
    try:
        page = channel.events_page(page_id=cursor, wait=10)  # empty when asked: answers once one exists
    finally:
        poster.join()
    assert [event["id"] for event in page["results"]] == [agent_event(7)["id"]]
    status, body = channel.api("GET", "/events", query={"wait": "21"})
    assert (status, body["msg_id"]) == (422, "ERROR$VALIDATION")


def test_big_bodies_in_s3_oversized_refused_and_the_conversation_cap(
    life: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_limits(monkeypatch, max_event_bytes=64 * 1024, max_events_per_conversation=5)
    channel = open_channel(life)
    big = agent_event(0, text="x" * 20_000)  # over the inline size: its body goes to S3
    huge = agent_event(1, text="y" * 100_000)  # over the per-event cap
    status, body = channel.post_events([big, huge])
    assert status == 200, body
    assert body["refused"] == [{"id": huge["id"], "error_code": "EVENT_TOO_LARGE"}]
    assert len(event_objects(life, channel.conversation_id)) == 1
    results = channel.events_page()["results"]
    assert results[0]["event"] == big
    assert (results[1]["id"], results[1]["event"], results[1]["error_code"]) == (huge["id"], None, "EVENT_TOO_LARGE")
    # A page stays within Lambda's answer size: past the byte budget it ends (never before its first event).
    budgeted = services.channel_store().events_after(channel.conversation_id, 0, 10, max_bytes=1000)
    assert [event["event_id"] for event in budgeted] == [big["id"]]

    status, body = channel.post_events([agent_event(i) for i in range(2, 8)])  # 2 + 6 > 5
    assert (status, body["status"], body["msg_id"], body["stored"]) == (413, "error", "SANDBOX$EVENT_LIMIT_REACHED", 3)
    assert [event["id"] for event in channel.transcript()] == [agent_event(i)["id"] for i in range(5)]
    status, body = channel.post_events([agent_event(3), agent_event(4)])  # at the cap, redelivery is still fine
    assert (status, body["stored"], body["duplicates"]) == (200, 0, 2)

    set_limits(monkeypatch, max_event_bytes_per_conversation=2048)  # the cap in bytes, likewise
    by_bytes = open_channel(life)
    status, body = by_bytes.post_events([agent_event(i, text="b" * 300) for i in range(10)])
    assert (status, body["msg_id"]) == (413, "SANDBOX$EVENT_LIMIT_REACHED")
    assert 1 <= body["stored"] < 10
    assert [event["id"] for event in by_bytes.transcript()] == [agent_event(i)["id"] for i in range(body["stored"])]


def test_events_of_a_starting_conversation_and_a_bad_batch(life: Lifecycle) -> None:
    channel = open_channel(life, running=False)  # STARTING: the token already opens the channel
    assert channel.post_events([agent_event(0)])[0] == 200
    status, body = channel.post_events([{"kind": "MessageEvent"}])
    assert (status, body["msg_id"]) == (400, "ERROR$INVALID_REQUEST")
    status, body = channel.post_events([agent_event(1)], token=channel.token + "x")
    assert status == 401
    stored = [item for item in channel_items(life, channel.conversation_id) if item["sk"]["S"].startswith("EVENT#")]
    assert len(stored) == 1
