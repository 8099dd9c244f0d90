"""What each `convo` command does, given parsed arguments: call the API, print, return the exit code."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from openhands_conversations_client.client import ConversationsClient
from openhands_conversations_client.errors import ApiError, ClientError
from openhands_conversations_client.models import RUNNING, AgentEvent, Conversation, ConversationAction
from openhands_conversations_client.output import (
    conversation_details,
    conversation_table,
    quota_lines,
    settings_lines,
)
from openhands_conversations_client.progress import choose_display, utc_now
from openhands_conversations_client.transcript import render, waiting_hint, workspace_summary

# Exit codes (documented in client/README.md and `convo --help`).
EXIT_OK = 0
EXIT_CONVERSATION_FAILED = 1  # waited, and the conversation ended in ERROR (or was closed) instead of RUNNING
EXIT_USAGE = 2  # bad arguments
EXIT_API_ERROR = 3  # the API answered with an error, or could not be reached
EXIT_WAIT_TIMEOUT = 4  # --wait gave up: the conversation was still starting
EXIT_INTERRUPTED = 130  # Ctrl-C while waiting (the conversation goes on)

PROVIDER_TOKEN_FLAGS = {
    "github_token": "github",
    "gitlab_token": "gitlab",
    "bitbucket_token": "bitbucket",
    "azure_devops_token": "azure_devops",
}


class UsageError(Exception):
    """Arguments that parse but make no sense together; exit 2."""


class Output:
    """Where results go: stdout, as the API's JSON with `--json` or as text; messages to stderr."""

    def __init__(self, json_mode: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.json_mode = json_mode
        self.stdout = stdout
        self.stderr = stderr

    def json(self, value: object) -> None:
        self.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def lines(self, lines: list[str]) -> None:
        self.stdout.write("".join(line + "\n" for line in lines))

    def error(self, message: str) -> None:
        self.stderr.write(f"convo: {message}\n")


Handler = Callable[[ConversationsClient, argparse.Namespace, Output], int]


# -- argument helpers ------------------------------------------------------------------------------
def _json_argument(value: str | None, flag: str) -> Any:
    """A JSON value given inline, or read from a file as `@path`."""
    if value is None:
        return None
    text = _read_file(value[1:], flag) if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{flag}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None


def _read_file(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{flag}: cannot read {path}: {error.strerror}") from None


class _Stdin:
    """`-` as a value reads it from standard input, once (keeps secrets out of shell history)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._used_by: str | None = None

    def resolve(self, value: str | None, flag: str) -> str | None:
        if value != "-":
            return value
        if self._used_by is not None:
            raise UsageError(f"{flag} and {self._used_by} cannot both read standard input")
        self._used_by = flag
        return self._stream.read().rstrip("\r\n")


# -- waiting ---------------------------------------------------------------------------------------
def _settled_exit_code(conversation: Conversation) -> int:
    return EXIT_OK if conversation.conversation_status == RUNNING else EXIT_CONVERSATION_FAILED


def wait_and_show(
    api: ConversationsClient, conversation_id: str, heading: str, args: argparse.Namespace, out: Output
) -> int:
    """Follow the conversation until it settles: a live display (or lines), or its final JSON."""
    try:
        if out.json_mode:
            final = api.wait_until_settled(conversation_id, timeout=args.wait_timeout, poll_interval=args.poll_interval)
            out.json(final.raw)
            return _settled_exit_code(final)
        with choose_display(out.stdout, heading) as display:
            final = api.wait_until_settled(
                conversation_id,
                on_change=display.update,
                timeout=args.wait_timeout,
                poll_interval=args.poll_interval,
                sleep=display.sleep,
            )
            display.finish(final)
        return _settled_exit_code(final)
    except KeyboardInterrupt:
        out.error(f"stopped waiting; the conversation goes on: convo show {conversation_id}")
        return EXIT_INTERRUPTED


# -- commands --------------------------------------------------------------------------------------
def create(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    stdin = _Stdin(sys.stdin)
    created = api.create(
        args.repo,
        git_provider=args.provider,
        selected_branch=args.branch,
        initial_user_msg=stdin.resolve(args.message, "--message"),
        image_urls=args.image,
        replay_json=_read_file(args.replay_json, "--replay-json") if args.replay_json else None,
        suggested_task=_json_argument(args.suggested_task, "--suggested-task"),
        create_microagent=_json_argument(args.create_microagent, "--create-microagent"),
        conversation_instructions=stdin.resolve(args.instructions, "--instructions"),
        mcp_config=_json_argument(args.mcp_config, "--mcp-config"),
        idempotency_key=args.idempotency_key,
    )
    if args.wait:
        heading = f"Conversation {created.conversation_id}"
        if args.repo:
            heading += f"  {args.repo}" + (f" @ {args.branch}" if args.branch else "")
        return wait_and_show(api, created.conversation_id, heading, args, out)
    if out.json_mode:
        out.json(created.raw)
    else:
        out.lines(
            [
                f"created conversation {created.conversation_id} ({created.conversation_status})",
                f"follow it: convo show {created.conversation_id}",
            ]
        )
    return EXIT_OK


def list_conversations(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    conversations = list(
        api.list(
            page_size=args.page_size,
            limit=None if args.all else args.limit,
            selected_repository=args.repo,
            conversation_trigger=args.trigger,
        )
    )
    if out.json_mode:
        out.json([conversation.raw for conversation in conversations])
    else:
        out.lines(conversation_table(conversations))
    return EXIT_OK


def show(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    conversation = api.get(args.conversation_id)
    if out.json_mode:
        out.json(conversation.raw)
    else:
        out.lines(conversation_details(conversation, utc_now()))
    return EXIT_OK


def _acted(done: str, action: ConversationAction, out: Output) -> int:
    """`<id>: Conversation stopped (STOPPED)`: the service's message, or `done` when it sent none."""
    if out.json_mode:
        out.json(action.raw)
    else:
        out.lines([f"{action.conversation_id}: {action.message or done} ({action.conversation_status})"])
    return EXIT_OK


def stop(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    return _acted("stopped", api.stop(args.conversation_id), out)


def start(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    action = api.start(args.conversation_id)
    if args.wait:
        heading = f"Conversation {action.conversation_id}"
        return wait_and_show(api, action.conversation_id, heading, args, out)
    return _acted("started", action, out)


def rename(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    api.rename(args.conversation_id, args.title)
    if out.json_mode:
        out.json({"status": "ok", "conversation_id": args.conversation_id, "title": args.title})
    else:
        out.lines([f"renamed {args.conversation_id}: {args.title}"])
    return EXIT_OK


def delete(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    api.delete(args.conversation_id)
    if out.json_mode:
        out.json({"status": "ok", "conversation_id": args.conversation_id})
    else:
        out.lines([f"deleted {args.conversation_id}"])
    return EXIT_OK


def settings_show(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    settings = api.settings()
    if out.json_mode:
        out.json(settings.raw)
    else:
        out.lines(settings_lines(settings))
    return EXIT_OK


def _provider_tokens(args: argparse.Namespace, stdin: _Stdin) -> dict[str, str] | None:
    tokens: dict[str, str] = {}
    for pair in args.provider_token or ():
        name, separator, token = pair.partition("=")
        if not separator or not name:
            # The value is a secret: the message never repeats it.
            raise UsageError("--provider-token wants PROVIDER=TOKEN (e.g. enterprise=...)")
        tokens[name.strip().lower()] = token
    for attribute, provider in PROVIDER_TOKEN_FLAGS.items():
        value = stdin.resolve(getattr(args, attribute), "--" + attribute.replace("_", "-"))
        if value is not None:
            tokens[provider] = value
    return tokens or None


def settings_set(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    stdin = _Stdin(sys.stdin)
    changes: dict[str, Any] = {
        "agent": args.agent,
        "max_iterations": args.max_iterations,
        "confirmation_mode": None if args.confirmation_mode is None else args.confirmation_mode == "on",
        "security_analyzer": args.security_analyzer,
        "llm_model": args.llm_model,
        "llm_base_url": args.llm_base_url,
        "llm_api_key": stdin.resolve(args.llm_api_key, "--llm-api-key"),
        "provider_tokens": _provider_tokens(args, stdin),
        "sandbox_base_container_image": args.sandbox_image,
        "authorized_event_sources": [] if args.no_event_sources else args.event_source,
    }
    if all(value is None for value in changes.values()):
        raise UsageError("settings set: give at least one setting to change (see convo settings set --help)")
    settings = api.update_settings(**changes)
    if out.json_mode:
        out.json(settings.raw)
    else:
        out.lines(["settings saved", *settings_lines(settings)])
    return EXIT_OK


def quota(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    current = api.quota()
    if out.json_mode:
        out.json(current.raw)
    else:
        out.lines(quota_lines(current))
    return EXIT_OK


# -- the running conversation ------------------------------------------------------------------------
def send(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    text = _Stdin(sys.stdin).resolve(args.text, "TEXT")
    if not text:
        raise UsageError("send: the message is empty")
    accepted = api.send_message(args.conversation_id, text, args.image, args.idempotency_key)
    if out.json_mode:
        out.json(accepted.raw)
    else:
        out.lines([f"sent {accepted.message_id}; the agent's answer: convo events {args.conversation_id} --follow"])
    return EXIT_OK


def _print_event(event: AgentEvent, conversation_id: str, out: Output) -> None:
    if out.json_mode:
        out.stdout.write(json.dumps(event.raw, ensure_ascii=False) + "\n")
    else:
        lines = render(event)
        hint = waiting_hint(event, conversation_id)
        out.lines(lines + ([hint] if hint else []))
    out.stdout.flush()


def events(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    """The transcript so far (and with --follow, each new event as it comes); --json: one envelope a line."""
    try:
        stream = (
            api.follow_events(args.conversation_id, args.page_id)
            if args.follow
            else api.events(args.conversation_id, args.page_id)
        )
        for event in stream:
            _print_event(event, args.conversation_id, out)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED if args.follow else EXIT_OK
    return EXIT_OK


def confirm(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    accepted = api.confirm(args.conversation_id, args.accept, args.reason)
    if out.json_mode:
        out.json(accepted.raw)
    else:
        what = (
            "accepted: the agent runs its pending action" if args.accept else "rejected: the pending action is not run"
        )
        out.lines([f"{what} ({accepted.message_id})"])
    return EXIT_OK


def diff(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    workspace = api.workspace(args.conversation_id)
    if out.json_mode:
        out.json(workspace.raw)
        return EXIT_OK
    if not args.patch:
        out.lines([*workspace_summary(workspace), ""])
    out.stdout.write(workspace.diff)
    if workspace.diff_truncated:
        out.error("the diff was cut at the service's size cap; the file list above is complete")
    return EXIT_OK


CHAT_PROMPT = "> "
CHAT_HELP = (
    "type a message and press Enter; /accept or /reject [reason] answers a confirmation; "
    "/diff shows the workspace; /quit or Ctrl-D leaves (the conversation goes on)"
)


class _ChatScreen:
    """Events printed above the line being typed: the prompt and what was typed so far are redrawn."""

    def __init__(self, out: Output, interactive: bool) -> None:
        self.out = out
        self.interactive = interactive
        self._lock = threading.Lock()

    def show(self, lines: list[str]) -> None:
        if not lines:
            return
        with self._lock:
            if self.interactive:
                typed = _typed_so_far()
                self.out.stdout.write("\r\x1b[K" + "".join(line + "\n" for line in lines) + CHAT_PROMPT + typed)
            else:
                self.out.stdout.write("".join(line + "\n" for line in lines))
            self.out.stdout.flush()


def _typed_so_far() -> str:
    try:
        import readline
    except ImportError:  # pragma: no cover - every Unix Python has it
        return ""
    return readline.get_line_buffer()


def chat(api: ConversationsClient, args: argparse.Namespace, out: Output) -> int:
    """Interactive: the transcript streams in while you type messages to the agent."""
    conversation_id = args.conversation_id
    conversation = api.get(conversation_id)  # a wrong id fails here, before anything is drawn
    interactive = sys.stdin.isatty() and out.stdout.isatty()
    screen = _ChatScreen(out, interactive)
    leaving = threading.Event()
    problems: list[BaseException] = []

    def follow() -> None:
        try:
            for event in api.follow_events(conversation_id, keep_going=lambda: not leaving.is_set()):
                if leaving.is_set():
                    return
                hint = waiting_hint(event, conversation_id)
                screen.show(render(event) + (["         /accept or /reject [reason]"] if hint else []))
        except ClientError as error:
            problems.append(error)
            screen.show([f"convo: cannot read the events: {error}"])

    title = f" {conversation.title}" if conversation.title else ""
    screen.show([f"chat with {conversation_id}{title} ({conversation.conversation_status}); {CHAT_HELP}"])
    threading.Thread(target=follow, name="convo-chat-events", daemon=True).start()
    try:
        while True:
            try:
                line = input(CHAT_PROMPT if interactive else "").strip()
            except EOFError:
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            try:
                _chat_command(api, conversation_id, line, screen)
            except ApiError as error:
                screen.show([f"convo: {error.msg_id} (HTTP {error.status}): {error.message}"])
    except KeyboardInterrupt:
        pass
    finally:
        leaving.set()
    if interactive:
        out.stdout.write("\n")
    out.stdout.flush()
    return EXIT_OK


def _chat_command(api: ConversationsClient, conversation_id: str, line: str, screen: _ChatScreen) -> None:
    command, _, rest = line.partition(" ")
    if command == "/accept":
        api.confirm(conversation_id, True, rest.strip() or None)
    elif command == "/reject":
        api.confirm(conversation_id, False, rest.strip() or None)
    elif command == "/diff":
        workspace = api.workspace(conversation_id)
        screen.show([*workspace_summary(workspace), *workspace.diff.splitlines()])
    elif command.startswith("/") and command != "//":
        screen.show([f"convo: unknown command {command}; {CHAT_HELP}"])
    else:
        api.send_message(conversation_id, line[1:] if line.startswith("//") else line)
