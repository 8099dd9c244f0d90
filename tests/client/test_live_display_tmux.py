"""`convo create --wait` in a real terminal (tmux, 120x30) while the fake API moves through the phases."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from tests.client.conftest import installed_convo
from tests.client.fake_api import HAPPY_PHASES, FakeConversationsApi
from tests.client.tmux_pane import command_in_terminal

LABELS = [
    "Queued",
    "Initializing context",
    "Starting runtime",
    "Runtime started",
    "Setting up workspace",
    "Running setup script",
    "Setting up git hooks",
    "Starting agent server",
]
assert len(LABELS) == len(HAPPY_PHASES) + 1


def seconds_on_line(screen: str, label: str) -> float:
    """The time shown on the phase line of `label` (`✓ Queued   1.2s`)."""
    found = re.search(rf"^\s+\S {re.escape(label)}\s+(\d+\.\d)s\s*$", screen, re.MULTILINE)
    assert found, f"no timed line for {label!r} in:\n{screen}"
    return float(found.group(1))


def elapsed(screen: str) -> float:
    found = re.search(r"^\s+elapsed (\d+\.\d)s\s*$", screen, re.MULTILINE)
    assert found, f"no elapsed line in:\n{screen}"
    return float(found.group(1))


def shows(text: str) -> Callable[[str], bool]:
    return lambda screen: text in screen


def start_convo(fake: FakeConversationsApi, repository: str) -> list[str]:
    fake.advance_on_get = False
    return [
        str(installed_convo()),
        "create",
        "--endpoint",
        fake.url,
        "--repo",
        repository,
        "--branch",
        "main",
        "--message",
        "hi",
        "--wait",
        "--poll-interval",
        "0.1",
    ]


def created_conversation(fake: FakeConversationsApi) -> str:
    deadline = time.monotonic() + 15
    while not fake.conversations:
        assert time.monotonic() < deadline, "convo never created the conversation"
        time.sleep(0.05)
    (conversation_id,) = fake.conversations
    return conversation_id


def test_phases_appear_live_with_their_times_and_the_final_state_stays() -> None:
    with FakeConversationsApi().running() as fake, command_in_terminal(start_convo(fake, "user/repo"), {}) as pane:
        conversation_id = created_conversation(fake)
        screen = pane.wait_for(shows("Queued"), "the first phase")
        assert f"Conversation {conversation_id}  user/repo @ main" in screen

        # The current phase's clock runs between polls, with nothing changing on the server.
        first = seconds_on_line(screen, "Queued")
        time.sleep(1.2)
        screen = pane.capture()
        assert seconds_on_line(screen, "Queued") >= first + 1.0
        assert elapsed(screen) >= 1.0

        # Each new phase appears; the one before keeps the time it took.
        for index, label in enumerate(LABELS[1:], start=1):
            fake.advance(conversation_id)
            screen = pane.wait_for(shows(label), label)
            done = seconds_on_line(screen, LABELS[index - 1])
            if index == 1:
                assert done >= 1.0  # Queued lasted the 1.2 s waited above
            time.sleep(0.15)

        mid_run = pane.capture()
        assert all(mid_run.count(label) == 1 for label in LABELS), f"lines drawn twice:\n{mid_run}"

        fake.advance(conversation_id)  # READY: RUNNING
        assert pane.exit_code() == 0
        final = pane.capture()
        assert re.search(r"^RUNNING after \d+\.\ds; agent server http://127\.0\.0\.1:9/agent$", final, re.MULTILINE)
        for label in LABELS:
            assert final.count(label) == 1, f"{label!r} not shown exactly once:\n{final}"
            seconds_on_line(final, label)
        assert "elapsed" not in final
        assert "✓ Starting agent server" in final


def test_a_failure_shows_the_failed_phase_code_and_message_and_exits_1() -> None:
    with (
        FakeConversationsApi().running() as fake,
        command_in_terminal(start_convo(fake, "user/broken-setup"), {}) as pane,
    ):
        conversation_id = created_conversation(fake)
        pane.wait_for(shows("Queued"), "the first phase")
        while fake.advance(conversation_id):
            time.sleep(0.2)

        assert pane.exit_code() == 1
        final = pane.capture()
        assert seconds_on_line(final, "Running setup script") >= 0.1
        assert "✗ Running setup script" in final
        assert re.search(r"^ERROR SETUP_SCRIPT_FAILED after \d+\.\ds$", final, re.MULTILINE)
        assert ".openhands/setup.sh exited with status 3" in final
        assert "  | npm ERR! missing script: build" in final
        assert "Setting up git hooks" not in final
