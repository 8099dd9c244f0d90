"""`convo`: create OpenHands conversations and watch them start, from a terminal or a script."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from openhands_conversations_client import commands
from openhands_conversations_client.client import (
    DEFAULT_ENDPOINT,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_WAIT_SECONDS,
    ConversationsClient,
)
from openhands_conversations_client.commands import (
    EXIT_API_ERROR,
    EXIT_USAGE,
    EXIT_WAIT_TIMEOUT,
    Output,
    UsageError,
)
from openhands_conversations_client.errors import ApiError, ApiUnreachable, ClientError, WaitTimeout
from openhands_conversations_client.version import __version__

ENDPOINT_VARIABLE = "CONVO_ENDPOINT"
API_KEY_VARIABLE = "CONVO_API_KEY"

EPILOG = f"""\
endpoint and key: --endpoint / ${ENDPOINT_VARIABLE} (default {DEFAULT_ENDPOINT}, the local stack;
with or without the trailing /api), --api-key / ${API_KEY_VARIABLE} (sent as a Bearer token).

exit codes:
  0  done (with --wait: the conversation is RUNNING)
  1  with --wait: the conversation ended in ERROR (its error code and message are printed) or was closed
  2  usage error
  3  the API answered with an error (its msg_id and message are printed) or could not be reached
  4  with --wait: still starting when --wait-timeout ran out
  130 interrupted while waiting (the conversation goes on)
"""


def _add_common_options(parser: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    """Options accepted before or after the command: a subcommand's copy only sets what was given."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if on_subcommand else value

    parser.add_argument("--endpoint", default=default(None), help=f"API URL (${ENDPOINT_VARIABLE})")
    parser.add_argument("--api-key", default=default(None), help=f"API key (${API_KEY_VARIABLE})")
    parser.add_argument("--json", action="store_true", default=default(False), help="print the API's JSON")
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(DEFAULT_TIMEOUT_SECONDS),
        help=f"seconds to wait for each HTTP answer (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="show its progress until it is RUNNING or ERROR")
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=DEFAULT_WAIT_SECONDS,
        help=f"give up waiting after this many seconds (default {DEFAULT_WAIT_SECONDS:g})",
    )
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between status reads (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convo",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common_options(parser, on_subcommand=False)
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: commands.Handler, help_text: str) -> argparse.ArgumentParser:
        sub = subcommands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common_options(sub, on_subcommand=True)
        sub.set_defaults(handler=handler)
        return sub

    create = command("create", commands.create, "create a conversation (and with --wait, watch it start)")
    create.add_argument("--repo", "--repository", dest="repo", help="owner/repo or an https clone URL")
    create.add_argument("--provider", help="git provider: github (default), gitlab, bitbucket, azure_devops, ...")
    create.add_argument("--branch", help="branch to check out (default: the repository's default branch)")
    create.add_argument("--message", help="the first message to the agent ('-' reads standard input)")
    create.add_argument("--instructions", help="conversation instructions ('-' reads standard input)")
    create.add_argument("--image", action="append", metavar="URL", help="image URL for the first message (repeatable)")
    create.add_argument("--replay-json", metavar="FILE", help="a file holding a conversation to replay")
    create.add_argument("--suggested-task", metavar="JSON", help="suggested task as JSON, or @file")
    create.add_argument("--create-microagent", metavar="JSON", help="create_microagent as JSON, or @file")
    create.add_argument("--mcp-config", metavar="JSON", help="MCP servers as JSON, or @file")
    create.add_argument("--idempotency-key", help="the same key and body return the same conversation")
    _add_wait_options(create)

    listing = command("list", commands.list_conversations, "list your conversations, newest first")
    listing.add_argument("--limit", type=int, default=20, help="show at most this many (default 20)")
    listing.add_argument("--all", action="store_true", help="show every conversation, page after page")
    listing.add_argument("--page-size", type=int, default=None, help="conversations per request (1-100)")
    listing.add_argument("--repo", help="only conversations on this repository (owner/repo)")
    listing.add_argument("--trigger", help="only conversations started this way: gui, api, suggested_task, ...")

    command("show", commands.show, "show a conversation: status, error, timeline").add_argument("conversation_id")
    command("stop", commands.stop, "stop a conversation").add_argument("conversation_id")
    start = command("start", commands.start, "start a stopped conversation again")
    start.add_argument("conversation_id")
    _add_wait_options(start)
    command("delete", commands.delete, "delete a conversation").add_argument("conversation_id")
    rename = command("rename", commands.rename, "give a conversation a new title")
    rename.add_argument("conversation_id")
    rename.add_argument("title")
    command("quota", commands.quota, "how many conversations may be active at once, and how many are")

    send = command("send", commands.send, "send the agent a message (delivered once, in order)")
    send.add_argument("conversation_id")
    send.add_argument("text", help="the message ('-' reads standard input)")
    send.add_argument("--image", action="append", metavar="URL", help="an image URL (repeatable)")
    send.add_argument("--idempotency-key", help="the same key and text send the message once")
    events = command(
        "events", commands.events, "the agent's events: messages, commands and their output (--json: one a line)"
    )
    events.add_argument("conversation_id")
    events.add_argument("--follow", "-f", action="store_true", help="keep showing new events as they come (Ctrl-C)")
    events.add_argument("--page-id", help="start after this cursor (a next_page_id)")
    command("chat", commands.chat, "talk with the agent: type messages, see its events stream in").add_argument(
        "conversation_id"
    )
    confirm = command("confirm", commands.confirm, "answer the confirmation the agent waits for")
    confirm.add_argument("conversation_id")
    answer = confirm.add_mutually_exclusive_group(required=True)
    answer.add_argument("--accept", dest="accept", action="store_true", help="run the pending action")
    answer.add_argument("--reject", dest="accept", action="store_false", help="do not run it")
    confirm.add_argument("--reason", help="why (kept in the transcript)")
    diff = command("diff", commands.diff, "what the agent changed: files with line counts, then the unified diff")
    diff.add_argument("conversation_id")
    diff.add_argument("--patch", action="store_true", help="only the diff (for git apply)")

    settings = subcommands.add_parser("settings", help="show or change your settings (secrets are never shown)")
    settings.set_defaults(help_of=settings)
    settings_commands = settings.add_subparsers(title="settings commands", metavar="COMMAND")
    settings_show = settings_commands.add_parser("show", help="show your settings")
    _add_common_options(settings_show, on_subcommand=True)
    settings_show.set_defaults(handler=commands.settings_show)
    settings_set = settings_commands.add_parser(
        "set",
        help="change settings; options left out keep their value",
        description="Change settings; options left out keep their value. A secret given as '' is cleared, "
        "as '-' is read from standard input. Secrets are never printed.",
    )
    _add_common_options(settings_set, on_subcommand=True)
    settings_set.set_defaults(handler=commands.settings_set)
    settings_set.add_argument("--agent")
    settings_set.add_argument("--max-iterations", type=int)
    settings_set.add_argument("--confirmation-mode", choices=["on", "off"])
    settings_set.add_argument("--security-analyzer")
    settings_set.add_argument("--llm-model")
    settings_set.add_argument("--llm-base-url")
    settings_set.add_argument("--llm-api-key", metavar="KEY")
    for flag in commands.PROVIDER_TOKEN_FLAGS:
        settings_set.add_argument("--" + flag.replace("_", "-"), metavar="TOKEN")
    settings_set.add_argument(
        "--provider-token", action="append", metavar="PROVIDER=TOKEN", help="a token for any provider (repeatable)"
    )
    settings_set.add_argument("--sandbox-image", help="sandbox base container image")
    settings_set.add_argument(
        "--event-source",
        action="append",
        metavar="SOURCE",
        help="an EventBridge source allowed to create conversations for you (repeatable; replaces the list)",
    )
    settings_set.add_argument(
        "--no-event-sources", action="store_true", help="allow no integration to create conversations"
    )
    return parser


def _report(error: ClientError, out: Output) -> int:
    if isinstance(error, ApiError):
        if out.json_mode:
            out.json(
                {
                    **error.body,
                    "status": "error",
                    "http_status": error.status,
                    "msg_id": error.msg_id,
                    "message": error.message,
                }
            )
        else:
            out.error(f"{error.msg_id} (HTTP {error.status}): {error.message}")
            for item in error.body.get("detail") or ():
                if isinstance(item, dict):
                    where = ".".join(str(part) for part in item.get("loc") or ())
                    out.error(f"  {where}: {item.get('msg', '')}")
            if error.retry_after is not None:
                out.error(f"  retry after {error.retry_after:g} s")
        return EXIT_API_ERROR
    if isinstance(error, WaitTimeout):
        last = error.last
        message = f"{error}; it goes on: convo show {error.conversation_id}"
        if out.json_mode:
            out.json({"status": "error", "msg_id": "CLIENT$WAIT_TIMEOUT", "message": message, "conversation": last.raw})
        else:
            out.error(message)
        return EXIT_WAIT_TIMEOUT
    hint = " (is the local stack running? make dev)" if isinstance(error, ApiUnreachable) else ""
    if out.json_mode:
        msg_id = "CLIENT$UNREACHABLE" if isinstance(error, ApiUnreachable) else "CLIENT$UNEXPECTED_RESPONSE"
        out.json({"status": "error", "msg_id": msg_id, "message": str(error)})
    else:
        out.error(f"{error}{hint}")
    return EXIT_API_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, --version, or a usage error (argparse exits 2)
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    out = Output(args.json, sys.stdout, sys.stderr)
    handler: commands.Handler | None = getattr(args, "handler", None)
    if handler is None:  # `convo` or `convo settings` alone
        getattr(args, "help_of", parser).print_help(sys.stderr)
        return EXIT_USAGE
    endpoint = args.endpoint or os.environ.get(ENDPOINT_VARIABLE) or DEFAULT_ENDPOINT
    try:
        api = ConversationsClient(endpoint, args.api_key or os.environ.get(API_KEY_VARIABLE), timeout=args.timeout)
    except ValueError as error:
        out.error(str(error))
        return EXIT_USAGE
    with api:
        try:
            return handler(api, args, out)
        except UsageError as error:
            out.error(str(error))
            return EXIT_USAGE
        except ClientError as error:
            return _report(error, out)


if __name__ == "__main__":
    sys.exit(main())
