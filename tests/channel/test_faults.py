"""Faults on the channel: a share of the sandbox's webhook posts, inbox polls, acknowledgements and
the owner's sends are lost, half before they reach the service and half after it acted (the
answer is lost). Every side retries as the protocol says; the transcript is still complete and in
order, and every message reaches the agent once, in order, also across a sandbox restart."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from tests.channel.conftest import Channel, agent_event, open_channel
from tests.lifecycle.conftest import Lifecycle

LOST = 0.3
EVENTS = 60
MESSAGES = 12


class FlakyLink:
    """The network between one side and the service, losing a share of the calls."""

    def __init__(self, rng: random.Random, share: float = LOST) -> None:
        self._rng = rng
        self._share = share
        self.lost_before = 0
        self.lost_after = 0

    def call(self, send: Callable[[], tuple[int, Any]]) -> tuple[int, Any] | None:
        draw = self._rng.random()
        if draw < self._share / 2:
            self.lost_before += 1
            return None  # never reached the service
        answer = send()
        if draw < self._share:
            self.lost_after += 1
            return None  # the service acted; the answer was lost
        return answer


class Sandbox:
    """The sandbox's inbox poller: hand each item over once, then acknowledge it. What it handed
    over lives as long as the process (the agent-server's conversation)."""

    def __init__(self, channel: Channel, link: FlakyLink) -> None:
        self._channel = channel
        self._link = link
        self.handed: set[str] = set()
        self.unacknowledged: set[str] = set()

    def poll_once(self, delivered: list[str]) -> None:
        answer = self._link.call(lambda: self._channel.sandbox("GET", "inbox", query={"wait": "0"}))
        if answer is None:
            return
        status, body = answer
        assert status == 200, body
        for item in body["items"]:
            if item["item_id"] not in self.handed:
                delivered.append(item["text"])
                self.handed.add(item["item_id"])
            self.unacknowledged.add(item["item_id"])
            acked = self._link.call(lambda item_id=item["item_id"]: self._channel.ack(item_id))
            if acked is not None:
                assert acked[0] == 200, acked
                self.unacknowledged.discard(item["item_id"])


def test_lost_posts_and_polls_lose_nothing_and_repeat_nothing(life: Lifecycle) -> None:
    rng = random.Random(12)
    channel = open_channel(life)
    relay_link, sandbox_link, owner_link = FlakyLink(rng), FlakyLink(rng), FlakyLink(rng)
    events = [agent_event(index) for index in range(EVENTS)]
    messages = [f"message {index}" for index in range(MESSAGES)]
    delivered: list[str] = []
    sandbox = Sandbox(channel, sandbox_link)
    restarted = False

    emitted = 0
    sent = 0
    for _round in range(1000):  # bounded: a lost message would otherwise loop forever
        if emitted == EVENTS and sent == MESSAGES and len(delivered) >= MESSAGES:
            break
        if emitted < EVENTS:  # the relay: one batch, retried until the service answers
            batch = events[emitted : emitted + rng.randint(1, 5)]
            while (answer := relay_link.call(lambda batch=batch: channel.post_events(batch))) is None:
                pass
            assert answer[0] == 200, answer
            emitted += len(batch)
        if sent < MESSAGES and rng.random() < 0.5:  # the owner: retried with its Idempotency-Key
            key = {"Idempotency-Key": f"send-{sent}"}
            body = {"text": messages[sent]}
            while (
                answer := owner_link.call(lambda b=body, k=key: channel.api("POST", "/messages", b, headers=k))
            ) is None:
                pass
            assert answer[0] == 202, answer
            sent += 1
        sandbox.poll_once(delivered)
        if not restarted and len(delivered) >= MESSAGES // 2 and not sandbox.unacknowledged:
            sandbox = Sandbox(channel, sandbox_link)  # a restart: what it handed over is forgotten
            restarted = True
        assert len(delivered) <= MESSAGES

    assert restarted
    assert delivered == messages  # each once, in order
    assert [event["id"] for event in channel.transcript(limit=7)] == [event["id"] for event in events]
    for link in (relay_link, sandbox_link, owner_link):
        assert link.lost_before and link.lost_after  # the faults really happened on every side
