"""Readable lines for the agent's events: messages, commands and their output, statuses.

Each agent-server event kind gets a short form; what is only bookkeeping (the system prompt,
statistics, state updates other than the execution status) is left out. `render` returns no line
for an event that is not worth showing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from openhands_conversations_client.models import AgentEvent, Workspace

OUTPUT_PREFIX = "  | "
MAX_OUTPUT_LINES = 40
HIDDEN_KINDS = frozenset({"SystemPromptEvent", "TokenEvent", "Condensation", "CondensationRequest"})


def clock(timestamp: str) -> str:
    """`HH:MM:SS` of an ISO timestamp (with or without a zone), or the raw text if it is not one."""
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).strftime("%H:%M:%S")
    except ValueError:
        return timestamp[:8]


def text_of(content: Any) -> str:
    """The text items of a message or observation `content` list, joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(str(item.get("text", "")) for item in content if isinstance(item, Mapping))


def indented(text: str, limit: int = MAX_OUTPUT_LINES) -> list[str]:
    lines = text.rstrip("\n").splitlines()
    shown = [OUTPUT_PREFIX + line for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"{OUTPUT_PREFIX}... ({len(lines) - limit} more lines: convo events --json)")
    return shown


def _message(event: Mapping[str, Any], source: str) -> list[str]:
    message = event.get("llm_message") or {}
    text = text_of(message.get("content"))
    images = [
        url
        for item in message.get("content") or ()
        if isinstance(item, Mapping)
        for url in item.get("image_urls") or ()
    ]
    who = "you" if source == "user" else "agent"
    lines = [f"{who}: {line}" if index == 0 else f"     {line}" for index, line in enumerate(text.splitlines() or [""])]
    return lines + [f"     [image] {url}" for url in images]


def _action(event: Mapping[str, Any]) -> list[str]:
    action = event.get("action") or {}
    tool = str(event.get("tool_name") or action.get("kind") or "action")
    thought = text_of(event.get("thought"))
    lines = [f"agent thinks: {thought.strip()}"] if thought.strip() else []
    if tool == "terminal" or action.get("kind") in ("TerminalAction", "ExecuteBashAction", "CmdRunAction"):
        lines.append(f"$ {action.get('command', '')}")
    elif tool == "finish" or action.get("kind") == "FinishAction":
        lines.append(f"agent finished: {action.get('message', '')}")
    elif tool == "think" or action.get("kind") == "ThinkAction":
        lines.append(f"agent thinks: {action.get('thought', '')}")
    elif tool in ("file_editor", "str_replace_editor") or "path" in action:
        lines.append(f"edit {action.get('path', '')} ({action.get('command', 'edit')})")
    else:
        summary = event.get("summary") or json.dumps({k: v for k, v in action.items() if k != "kind"})[:200]
        lines.append(f"{tool}: {summary}")
    return lines


def _observation(event: Mapping[str, Any]) -> list[str]:
    observation = event.get("observation") or {}
    tool = str(event.get("tool_name") or "")
    if tool == "finish" or observation.get("kind") == "FinishObservation":
        return []  # the finish action already said it
    lines = indented(text_of(observation.get("content")))
    exit_code = observation.get("exit_code")
    if isinstance(exit_code, int) and exit_code != -1:
        lines.append(f"{OUTPUT_PREFIX}(exit {exit_code})")
    if observation.get("is_error") and not isinstance(exit_code, int):
        lines.append(f"{OUTPUT_PREFIX}(error)")
    return lines


def render(envelope: AgentEvent) -> list[str]:
    """The lines for one event, each prefixed with its time; [] for bookkeeping."""
    kind, event = envelope.kind, envelope.event
    if envelope.error_code or event is None:
        lines = [f"{kind} from {envelope.source} (not kept: {envelope.error_code or 'no body'})"]
    elif kind in HIDDEN_KINDS:
        return []
    elif kind == "MessageEvent":
        lines = _message(event, envelope.source)
    elif kind == "ActionEvent":
        lines = _action(event)
    elif kind == "ObservationEvent":
        lines = _observation(event)
    elif kind == "UserRejectObservation":
        lines = [f"rejected: {event.get('rejection_reason') or 'no reason given'}"]
    elif kind in ("AgentErrorEvent", "ConversationErrorEvent"):
        lines = [f"error: {event.get('error') or event.get('detail') or event.get('code') or ''}".rstrip()]
    elif kind == "PauseEvent":
        lines = ["paused"]
    elif kind == "ConversationStateUpdateEvent":
        status = _status(event)
        if status is None:
            return []
        lines = [f"-- agent {status.replace('_', ' ')}"]
    else:
        lines = [f"{kind} from {envelope.source}"]
    if not lines:
        return []
    stamp = clock(envelope.timestamp)
    return [f"{stamp} {lines[0]}", *(f"{' ' * len(stamp)} {line}" for line in lines[1:])]


def _status(event: Mapping[str, Any]) -> str | None:
    key, value = event.get("key"), event.get("value")
    if key == "execution_status" and isinstance(value, str):
        return value
    return None


def waiting_hint(envelope: AgentEvent, conversation_id: str) -> str | None:
    """A hint when the agent starts waiting for a confirmation."""
    event = envelope.event
    if envelope.kind == "ConversationStateUpdateEvent" and event and _status(event) == "waiting_for_confirmation":
        return f"         the agent waits for you: convo confirm {conversation_id} --accept (or --reject)"
    return None


def workspace_summary(workspace: Workspace) -> list[str]:
    """`branch main @ 1a2b3c4, 2 files changed` and one line per file (`A  path  +3 -0`)."""
    head = workspace.head_commit[:12] if workspace.head_commit else "no commit yet"
    count = len(workspace.files)
    lines = [f"branch {workspace.branch or '(detached)'} @ {head}, {count} file{'s' if count != 1 else ''} changed"]
    letters = {"added": "A", "modified": "M", "deleted": "D", "renamed": "R"}
    for changed in workspace.files:
        letter = letters.get(changed.status, "?")
        lines.append(f"  {letter}  {changed.path}  +{changed.additions} -{changed.deletions}")
    return lines
