"""Showing a starting conversation's progress: live on a terminal, one line per event otherwise.

Both displays take the conversation each time it changes (`update`), wait between polls
(`sleep`: the live one keeps its spinner and clocks moving meanwhile) and show how it ended
(`finish`). Times come from the service's timeline, so a phase that ran before the command
started is timed as correctly as one watched live.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol, TextIO

from openhands_conversations_client.models import ERROR, RUNNING, Conversation
from openhands_conversations_client.output import output_tail
from openhands_conversations_client.phases import PhaseLine, PhaseState, StartupProgress, format_seconds, phase_label
from openhands_conversations_client.phases import startup_progress as progress_of

Clock = Callable[[], datetime]
LABEL_WIDTH = 24
UNWRAPPED = 1_000_000  # plain lines go to logs: one line per message, whatever its length


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Symbols:
    done: str
    failed: str
    interrupted: str
    spinner: tuple[str, ...]


UNICODE_SYMBOLS = Symbols("✓", "✗", "■", tuple("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"))
ASCII_SYMBOLS = Symbols("+", "x", "-", tuple("|/-\\"))

GREEN, RED, YELLOW, CYAN, BOLD, RESET = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[36m", "\x1b[1m", "\x1b[0m"
HIDE_CURSOR, SHOW_CURSOR, CLEAR_TO_END = "\x1b[?25l", "\x1b[?25h", "\x1b[J"


class ProgressDisplay(Protocol):
    def __enter__(self) -> ProgressDisplay: ...
    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def update(self, conversation: Conversation) -> None: ...
    def sleep(self, seconds: float) -> None: ...
    def finish(self, conversation: Conversation) -> None: ...


def is_terminal(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("TERM", "") != "dumb"


def choose_display(stream: TextIO, heading: str, clock: Clock = utc_now) -> ProgressDisplay:
    """The live display on a terminal, plain lines otherwise (a pipe, a file, CI logs)."""
    if not is_terminal(stream):
        return PlainDisplay(stream, heading, clock)
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    symbols = UNICODE_SYMBOLS if encoding in ("utf8", "utf16", "utf32") else ASCII_SYMBOLS
    return LiveDisplay(stream, heading, clock, color="NO_COLOR" not in os.environ, symbols=symbols)


def outcome_lines(conversation: Conversation, progress: StartupProgress, width: int) -> list[str]:
    """How a settled conversation ended: its status, and for ERROR the code, message and output tail."""
    after = f" after {format_seconds(progress.elapsed_seconds)}" if progress.started_at else ""
    status = conversation.conversation_status
    if status == RUNNING:
        where = f"; agent server {conversation.agent_server_url}" if conversation.agent_server_url else ""
        return [f"RUNNING{after}{where}"]
    if status != ERROR:
        reason = f" ({conversation.status_reason})" if conversation.status_reason else ""
        return [f"{status}{after}{reason}"]
    lines = [f"ERROR {conversation.error_code or 'UNKNOWN'}{after}"]
    wrap_width = max(20, width - 4)
    lines += ["  " + line for line in textwrap.wrap(conversation.error_message or "(no message)", wrap_width)]
    details = conversation.error_details or {}
    if "exit_code" in details:
        lines.append(f"  exit code {details['exit_code']}")
    return lines + output_tail(conversation, "  ")


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class LiveDisplay:
    """Redraws in place: the heading, each phase with its duration (the current one with a spinner
    and its running time), and the total elapsed; the finished phases and the outcome stay on screen."""

    def __init__(
        self,
        stream: TextIO,
        heading: str,
        clock: Clock = utc_now,
        *,
        color: bool = True,
        symbols: Symbols = UNICODE_SYMBOLS,
        frame_seconds: float = 0.1,
    ) -> None:
        self._stream = stream
        self._heading = heading
        self._clock = clock
        self._color = color
        self._symbols = symbols
        self._frame_seconds = frame_seconds
        self._conversation: Conversation | None = None
        self._frame = 0
        self._drawn = 0

    def __enter__(self) -> LiveDisplay:
        self._stream.write(HIDE_CURSOR)
        self._draw()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stream.write(SHOW_CURSOR)
        self._stream.flush()

    def update(self, conversation: Conversation) -> None:
        self._conversation = conversation
        self._draw()

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(self._frame_seconds, left))
            self._frame += 1
            self._draw()

    def finish(self, conversation: Conversation) -> None:
        self._conversation = conversation
        self._draw(final=True)

    def _paint(self, text: str, color: str) -> str:
        return f"{color}{text}{RESET}" if self._color else text

    def _phase_line(self, line: PhaseLine, width: int) -> str:
        mark, color = {
            PhaseState.DONE: (self._symbols.done, GREEN),
            PhaseState.FAILED: (self._symbols.failed, RED),
            PhaseState.INTERRUPTED: (self._symbols.interrupted, YELLOW),
            PhaseState.CURRENT: (self._symbols.spinner[self._frame % len(self._symbols.spinner)], CYAN),
        }[line.state]
        text = _fit(f"{line.label:<{LABEL_WIDTH}} {format_seconds(line.seconds):>7}", width - 4)
        return f"  {self._paint(mark, color)} {text}"

    def render(self, width: int, final: bool = False) -> list[str]:
        lines = [self._paint(_fit(self._heading, width - 1), BOLD)]
        conversation = self._conversation
        if conversation is None:
            spinner = self._symbols.spinner[self._frame % len(self._symbols.spinner)]
            return [*lines, f"  {self._paint(spinner, CYAN)} waiting for the first status"]
        progress = progress_of(conversation, self._clock())
        lines += [self._phase_line(phase, width) for phase in progress.phases]
        if not progress.phases and not conversation.is_settled:
            label = phase_label(conversation.runtime_status or "STATUS$QUEUED")
            spinner = self._symbols.spinner[self._frame % len(self._symbols.spinner)]
            lines.append(f"  {self._paint(spinner, CYAN)} {label}")
        if final or conversation.is_settled:
            outcome = outcome_lines(conversation, progress, width)
            color = GREEN if conversation.conversation_status == RUNNING else RED
            lines.append(self._paint(outcome[0], BOLD + color))
            lines += outcome[1:]
        else:
            lines.append(_fit(f"  elapsed {format_seconds(progress.elapsed_seconds)}", width - 1))
        return lines

    def _draw(self, final: bool = False) -> None:
        size = shutil.get_terminal_size()
        lines = self.render(size.columns, final)
        if not final and len(lines) > size.lines - 1:
            # Lines scrolled off the screen cannot be redrawn: keep the heading and the latest ones.
            lines = [lines[0], *lines[len(lines) - size.lines + 2 :]]
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self._stream.write(up + CLEAR_TO_END + "\n".join(lines) + "\n")
        self._stream.flush()
        self._drawn = len(lines)


class PlainDisplay:
    """One line per event, nothing redrawn: `[  +2.1s] Starting runtime (Initializing context took 1.7s)`."""

    def __init__(self, stream: TextIO, heading: str, clock: Clock = utc_now) -> None:
        self._stream = stream
        self._heading = heading
        self._clock = clock
        self._announced = 0

    def __enter__(self) -> PlainDisplay:
        self._print(self._heading)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stream.flush()

    def update(self, conversation: Conversation) -> None:
        progress = progress_of(conversation, self._clock())
        for index in range(self._announced, len(progress.phases)):
            phase = progress.phases[index]
            seconds = (phase.started_at - progress.started_at).total_seconds() if progress.started_at else 0.0
            offset = "+" + format_seconds(seconds)
            before = progress.phases[index - 1] if index else None
            took = f" ({before.label} took {format_seconds(before.seconds)})" if before else ""
            self._print(f"[{offset:>8}] {phase.label}{took}")
        self._announced = len(progress.phases)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def finish(self, conversation: Conversation) -> None:
        self.update(conversation)
        progress = progress_of(conversation, self._clock())
        if progress.phases:
            last = progress.phases[-1]
            offset = "+" + format_seconds(progress.elapsed_seconds)
            self._print(f"[{offset:>8}] {last.label} {last.state} after {format_seconds(last.seconds)}")
        for line in outcome_lines(conversation, progress, UNWRAPPED):
            self._print(line)

    def _print(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()
