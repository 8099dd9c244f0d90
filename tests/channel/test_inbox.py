"""Messages and confirmations in: accepted while STARTING or RUNNING, delivered oldest first until
acknowledged, each once; Idempotency-Key; the agent's status and AgentStatusChanged; confirm."""

from __future__ import annotations

import threading

from conversation_service.models.events import AgentStatusChanged

from tests.channel.conftest import agent_event, open_channel
from tests.lifecycle.conftest import OTHER_USER, Lifecycle


def test_messages_in_order_until_acknowledged(life: Lifecycle) -> None:
    channel = open_channel(life, {"initial_user_msg": "first"}, running=False)  # STARTING accepts messages
    ids = []
    for text in ("second", "third"):
        status, body = channel.send(text)
        assert status == 202 and body["status"] == "ok", body
        ids.append(body["message_id"])
    key = {"Idempotency-Key": "retry-1"}
    status, again = channel.api("POST", "/messages", {"text": "fourth"}, headers=key)
    assert status == 202
    assert channel.api("POST", "/messages", {"text": "fourth"}, headers=key) == (202, again)  # one message
    status, body = channel.api("POST", "/messages", {"text": "other"}, headers=key)
    assert (status, body["msg_id"]) == (409, "ERROR$IDEMPOTENCY_KEY_REUSED")
    ids.append(again["message_id"])

    items = channel.inbox()
    assert [(item["item_id"], item["kind"], item["text"]) for item in items] == list(
        zip(ids, ["message"] * 3, ["second", "third", "fourth"], strict=True)
    )
    assert items[0]["image_urls"] == []
    assert channel.inbox() == items  # a poll whose answer was lost: the same items again
    assert channel.ack(ids[0]) == (200, {"status": "ok"})
    assert channel.ack(ids[0]) == (200, {"status": "ok"})  # repeating is harmless
    assert [item["item_id"] for item in channel.inbox()] == ids[1:]
    assert channel.ack("../x")[0] in (400, 404)

    life.drive_to_running(channel.conversation_id)
    for item_id in ids[1:]:
        assert channel.ack(item_id)[0] == 200
    assert channel.inbox() == []

    assert channel.send("hello", user=OTHER_USER)[0] == 404
    assert channel.api("POST", "/stop")[0] == 200
    status, body = channel.send("too late")
    assert (status, body["status"], body["msg_id"]) == (409, "error", "CONVERSATION$NOT_RUNNING")
    status, body = channel.sandbox("GET", "inbox")
    assert status == 401


def test_the_inbox_long_poll_answers_when_a_message_arrives(life: Lifecycle) -> None:
    channel = open_channel(life)

    def meanwhile() -> None:
        # The relay's post is served while the poll waits (the function is not held by the poll).
        assert channel.post_events([agent_event(0)])[0] == 200
        channel.send("while you wait")

    sender = threading.Timer(0.8, meanwhile)
    sender.start()
    try:
        items = channel.inbox(wait=10)  # empty when asked
    finally:
        sender.join()
    assert [item["text"] for item in items] == ["while you wait"]


def test_agent_status_events_and_confirmations(life: Lifecycle) -> None:
    channel = open_channel(life, {"initial_user_msg": "go"})
    life.published()
    status, body = channel.api("POST", "/confirm", {"accept": True})
    assert (status, body["msg_id"]) == (409, "CONVERSATION$NO_CONFIRMATION_PENDING")
    assert channel.agent_status("running") == (200, {"status": "ok"})
    assert channel.agent_status("waiting_for_confirmation")[0] == 200
    assert life.view(channel.conversation_id)["agent_status"] == "waiting_for_confirmation"
    assert channel.api("POST", "/confirm", {"accept": True}, user=OTHER_USER)[0] == 404

    status, body = channel.api("POST", "/confirm", {"accept": True, "reason": "looks fine"})
    assert status == 202, body
    status, again = channel.api("POST", "/confirm", {"accept": False})  # answered already
    assert (status, again["msg_id"]) == (409, "CONVERSATION$NO_CONFIRMATION_PENDING")
    assert channel.agent_status("waiting_for_confirmation")[0] == 200  # reported again: still answered
    assert channel.api("POST", "/confirm", {"accept": False})[0] == 409
    item = channel.inbox()[0]
    assert item == {
        "item_id": body["message_id"],
        "kind": "confirmation",
        "accept": True,
        "reason": "looks fine",
        "text": None,
        "image_urls": None,
    }
    channel.ack(item["item_id"])

    assert channel.agent_status("running")[0] == 200
    assert channel.agent_status("waiting_for_confirmation")[0] == 200  # the next action waits
    assert channel.api("POST", "/confirm", {"accept": False, "reason": "no"})[0] == 202
    assert [(i["kind"], i["accept"]) for i in channel.inbox()] == [("confirmation", False)]
    assert channel.agent_status("finished")[0] == 200
    status, body = channel.sandbox("POST", "agent-conversation", {"execution_status": "bored"})
    assert (status, body["msg_id"]) == (422, "ERROR$VALIDATION")

    life.settle(0.5)
    published = [e for e in life.published() if e["detail-type"] == "AgentStatusChanged"]
    details = [AgentStatusChanged.model_validate(e["detail"]) for e in published]
    assert [(d.old_agent_status, d.agent_status) for d in details] == [
        (None, "running"),
        ("running", "waiting_for_confirmation"),
        ("waiting_for_confirmation", "running"),
        ("running", "waiting_for_confirmation"),
        ("waiting_for_confirmation", "finished"),
    ]
    assert {(d.conversation_id, d.run, d.conversation_status) for d in details} == {
        (channel.conversation_id, 1, "RUNNING")
    }
