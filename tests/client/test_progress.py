"""Phases timed from the timeline, and both displays rendered with a fixed clock."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from openhands_conversations_client import Conversation
from openhands_conversations_client.phases import (
    PhaseState,
    format_seconds,
    phase_label,
    startup_progress,
)
from openhands_conversations_client.progress import (
    ASCII_SYMBOLS,
    LiveDisplay,
    PlainDisplay,
    choose_display,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def conversation(status: str, timeline: list[tuple[str, float]], **fields: Any) -> Conversation:
    body = {
        "conversation_id": "c" * 32,
        "conversation_status": status,
        "runtime_status": timeline[-1][0] if timeline else "STATUS$QUEUED",
        "timeline": [{"phase": phase, "at": at(seconds)} for phase, seconds in timeline],
        **fields,
    }
    return Conversation.from_json(body)


STARTING = [("STATUS$QUEUED", 0), ("STATUS$INITIALIZING_CONTEXT", 0.4), ("STATUS$STARTING_RUNTIME", 2.1)]
RUNNING = [*STARTING, ("STATUS$STARTING_AGENT_SERVER", 11.3), ("STATUS$READY", 12.3)]
FAILED = [*STARTING, ("STATUS$RUNNING_SETUP_SCRIPT", 3.8), ("STATUS$ERROR", 5.0)]
FAILURE = {
    "error_code": "SETUP_SCRIPT_FAILED",
    "error_message": ".openhands/setup.sh exited with status 3; see the end of its output in the details.",
    "error_details": {"exit_code": 3, "output_tail": "step 1\nnpm ERR! missing script: build"},
}


@pytest.mark.parametrize(
    ("phase", "label"),
    [
        ("STATUS$RUNNING_SETUP_SCRIPT", "Running setup script"),
        ("STATUS$QUEUED", "Queued"),
        ("STATUS$WARMING_CACHES", "Warming caches"),
        ("", ""),
    ],
)
def test_phase_labels(phase: str, label: str) -> None:
    assert phase_label(phase) == label


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.04, "0.0s"), (0.44, "0.4s"), (12.34, "12.3s"), (125, "2m05s"), (3725, "1h02m")]
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_a_starting_conversation_has_done_phases_and_a_current_one() -> None:
    progress = startup_progress(conversation("STARTING", STARTING), now=T0 + timedelta(seconds=5.1))

    assert [(line.phase, round(line.seconds, 3), line.state) for line in progress.phases] == [
        ("STATUS$QUEUED", 0.4, PhaseState.DONE),
        ("STATUS$INITIALIZING_CONTEXT", 1.7, PhaseState.DONE),
        ("STATUS$STARTING_RUNTIME", 3.0, PhaseState.CURRENT),
    ]
    assert progress.elapsed_seconds == pytest.approx(5.1)
    assert progress.ended_at is None


def test_a_running_conversation_ends_at_ready() -> None:
    progress = startup_progress(conversation("RUNNING", RUNNING), now=T0 + timedelta(hours=1))

    assert [line.state for line in progress.phases] == [PhaseState.DONE] * 4
    assert "STATUS$READY" not in [line.phase for line in progress.phases]
    assert progress.phases[-1].seconds == pytest.approx(1.0)
    assert progress.elapsed_seconds == pytest.approx(12.3)
    assert progress.ended_at == T0 + timedelta(seconds=12.3)


def test_an_error_marks_the_phase_it_happened_in() -> None:
    progress = startup_progress(conversation("ERROR", FAILED, **FAILURE), now=T0 + timedelta(hours=1))

    assert progress.phases[-1].phase == "STATUS$RUNNING_SETUP_SCRIPT"
    assert progress.phases[-1].state is PhaseState.FAILED
    assert progress.phases[-1].seconds == pytest.approx(1.2)
    assert progress.elapsed_seconds == pytest.approx(5.0)


def test_a_restarted_conversation_shows_its_latest_run_only() -> None:
    timeline = [*RUNNING, ("STATUS$STOPPED", 100), ("STATUS$QUEUED", 200), ("STATUS$INITIALIZING_CONTEXT", 201)]

    progress = startup_progress(conversation("STARTING", timeline), now=T0 + timedelta(seconds=203))

    assert [(line.phase, line.state) for line in progress.phases] == [
        ("STATUS$QUEUED", PhaseState.DONE),
        ("STATUS$INITIALIZING_CONTEXT", PhaseState.CURRENT),
    ]
    assert progress.elapsed_seconds == pytest.approx(3.0)


def test_a_conversation_closed_while_starting_is_interrupted() -> None:
    timeline = [*STARTING, ("STATUS$STOPPED", 4.0)]
    progress = startup_progress(conversation("STOPPED", timeline), now=T0 + timedelta(hours=1))
    assert progress.phases[-1].state is PhaseState.INTERRUPTED
    assert progress.phases[-1].seconds == pytest.approx(1.9)


def test_a_settled_conversation_without_an_ending_entry_ends_at_its_last_update() -> None:
    progress = startup_progress(conversation("RUNNING", STARTING, updated_at=at(4.1)), now=T0 + timedelta(hours=1))
    assert progress.phases[-1].seconds == pytest.approx(2.0)
    assert progress.phases[-1].state is PhaseState.DONE


def test_a_clock_behind_the_service_never_shows_negative_time() -> None:
    progress = startup_progress(conversation("STARTING", STARTING), now=T0)
    assert progress.phases[-1].seconds == 0.0
    assert progress.elapsed_seconds == 0.0


def live(now: float, width: int = 80) -> tuple[LiveDisplay, io.StringIO]:
    stream = io.StringIO()
    display = LiveDisplay(
        stream,
        "Conversation cccc  user/repo @ main",
        lambda: T0 + timedelta(seconds=now),
        color=False,
        symbols=ASCII_SYMBOLS,
    )
    return display, stream


def test_live_display_shows_done_phases_the_current_one_and_the_elapsed_time() -> None:
    display, _ = live(now=5.1)
    display.update(conversation("STARTING", STARTING))

    lines = display.render(width=80)

    assert lines == [
        "Conversation cccc  user/repo @ main",
        "  + Queued                      0.4s",
        "  + Initializing context        1.7s",
        "  | Starting runtime            3.0s",
        "  elapsed 5.1s",
    ]


def test_live_display_final_error_shows_code_message_and_output_tail() -> None:
    display, _ = live(now=60)
    display.update(conversation("ERROR", FAILED, **FAILURE))

    lines = display.render(width=80, final=True)

    assert lines[4] == "  x Running setup script        1.2s"
    assert lines[5] == "ERROR SETUP_SCRIPT_FAILED after 5.0s"
    assert all(len(line) <= 78 for line in lines[6:8])  # the message wraps to the width
    assert " ".join(line.strip() for line in lines[6:8]) == FAILURE["error_message"]
    assert "  exit code 3" in lines
    assert lines[-1] == "  | npm ERR! missing script: build"
    assert not any("elapsed" in line for line in lines)


def test_live_display_final_running_names_the_agent_server() -> None:
    display, _ = live(now=60)
    display.update(conversation("RUNNING", RUNNING, agent_server_url="http://10.0.0.5:8000"))
    assert display.render(width=80, final=True)[-1] == "RUNNING after 12.3s; agent server http://10.0.0.5:8000"


def test_live_display_fits_narrow_terminals() -> None:
    display, _ = live(now=5.1)
    display.update(conversation("STARTING", STARTING))
    assert all(len(line) <= 24 for line in display.render(width=24))


def test_live_display_redraws_in_place() -> None:
    display, stream = live(now=5.1)
    with display:
        display.update(conversation("STARTING", STARTING))
        display.sleep(0.25)
    output = stream.getvalue()

    frames = output.split("\x1b[J")
    assert output.startswith("\x1b[?25l") and output.endswith("\x1b[?25h")
    assert frames[0] == "\x1b[?25l"  # the first frame moves nothing
    assert frames[1].endswith("\x1b[2F")  # the waiting frame had two lines
    assert all(frame.endswith("\x1b[5F") for frame in frames[2:-1])  # then the five lines above
    assert len(frames) >= 4  # redrawn while sleeping, between polls


def test_live_display_spinner_turns_between_polls() -> None:
    display, _ = live(now=5.1)
    display.update(conversation("STARTING", STARTING))
    first = display.render(width=80)[3]
    display.sleep(0.15)
    assert display.render(width=80)[3] != first


def test_plain_display_prints_one_line_per_event() -> None:
    stream = io.StringIO()
    display = PlainDisplay(stream, "Conversation cccc", lambda: T0 + timedelta(seconds=60))
    with display:
        display.update(conversation("STARTING", STARTING[:2]))
        display.update(conversation("STARTING", STARTING[:2]))
        display.update(conversation("STARTING", STARTING))
        display.finish(conversation("ERROR", FAILED, **FAILURE))

    assert stream.getvalue().splitlines()[:7] == [
        "Conversation cccc",
        "[   +0.0s] Queued",
        "[   +0.4s] Initializing context (Queued took 0.4s)",
        "[   +2.1s] Starting runtime (Initializing context took 1.7s)",
        "[   +3.8s] Running setup script (Starting runtime took 1.7s)",
        "[   +5.0s] Running setup script failed after 1.2s",
        "ERROR SETUP_SCRIPT_FAILED after 5.0s",
    ]
    assert "\x1b" not in stream.getvalue()


class FakeTerminal(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def test_display_is_live_on_a_terminal_and_plain_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert isinstance(choose_display(FakeTerminal(), "h"), LiveDisplay)
    assert isinstance(choose_display(io.StringIO(), "h"), PlainDisplay)
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(choose_display(FakeTerminal(), "h"), PlainDisplay)


def test_no_color_turns_colors_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "1")
    display = choose_display(FakeTerminal(), "h", lambda: T0 + timedelta(seconds=5.1))
    assert isinstance(display, LiveDisplay)
    display.update(conversation("STARTING", STARTING))
    assert not any("\x1b[3" in line for line in display.render(width=80))
    assert "✓" in display.render(width=80)[1]
