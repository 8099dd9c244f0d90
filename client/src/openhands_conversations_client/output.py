"""Text a person reads: the conversation list, one conversation, settings, the quota.

`--json` bypasses all of this and prints the API's own bodies.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from openhands_conversations_client.models import ERROR, Conversation, ConversationSummary, Quota, Settings
from openhands_conversations_client.phases import RUN_ENDING_PHASES, format_seconds, phase_label


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _repository(repository: str | None, branch: str | None) -> str:
    if not repository:
        return "-"
    return f"{repository} @ {branch}" if branch else repository


OUTPUT_TAIL_LINES = 15


def output_tail(conversation: Conversation, indent: str) -> list[str]:
    """The end of a failed script's output (`error_details.output_tail`), as `| ` lines."""
    tail = (conversation.error_details or {}).get("output_tail")
    if not isinstance(tail, str) or not tail.strip():
        return []
    lines = tail.rstrip().splitlines()[-OUTPUT_TAIL_LINES:]
    return [f"{indent}last lines of output (up to {OUTPUT_TAIL_LINES}):", *(f"{indent}| {line}" for line in lines)]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(str(row[index])) for row in [headers, *rows]) for index in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)) + "  " + row[-1]
        for row in [headers, *rows]
    ]


def conversation_table(conversations: Sequence[ConversationSummary]) -> list[str]:
    if not conversations:
        return ["no conversations"]
    rows = [
        [
            conversation.conversation_id,
            conversation.conversation_status,
            phase_label(conversation.runtime_status) if conversation.runtime_status else "-",
            _repository(conversation.selected_repository, conversation.selected_branch),
            _when(conversation.created_at),
            conversation.title or "-",
        ]
        for conversation in conversations
    ]
    return table(["ID", "STATUS", "PHASE", "REPOSITORY", "CREATED", "TITLE"], rows)


def timeline_lines(conversation: Conversation, now: datetime) -> list[str]:
    """Every timeline entry with its start time and how long it lasted (`…` while it goes on)."""
    lines: list[str] = []
    timeline = conversation.timeline
    for index, entry in enumerate(timeline):
        if index + 1 < len(timeline):
            took = format_seconds(max(0.0, (timeline[index + 1].at - entry.at).total_seconds()))
        elif entry.phase in RUN_ENDING_PHASES or conversation.is_settled:
            took = ""
        else:
            took = format_seconds(max(0.0, (now - entry.at).total_seconds())) + " so far"
        lines.append(f"    {_when(entry.at)}  {phase_label(entry.phase):<24} {took}".rstrip())
    return lines


def conversation_details(conversation: Conversation, now: datetime) -> list[str]:
    status = conversation.conversation_status
    if conversation.runtime_status:
        status += f" ({phase_label(conversation.runtime_status)})"
    if conversation.status_reason:
        status += f", reason {conversation.status_reason}"
    fields = [
        ("title", conversation.title or "-"),
        ("status", status),
        ("repository", _repository(conversation.repository, conversation.selected_branch)),
        ("commit", conversation.commit or "-"),
        ("created", _when(conversation.created_at)),
        ("updated", _when(conversation.updated_at)),
        ("agent", conversation.agent or "-"),
        ("llm model", conversation.llm_model or "-"),
    ]
    if conversation.agent_server_url:
        fields.append(("agent server", conversation.agent_server_url))
    if conversation.microagents:
        fields.append(("microagents", ", ".join(conversation.microagents)))
    if conversation.conversation_status == ERROR:
        fields.append(("error", f"{conversation.error_code or 'UNKNOWN'}: {conversation.error_message or ''}"))
    lines = [f"Conversation {conversation.conversation_id}"]
    lines += [f"  {name:<13}{value}" for name, value in fields]
    lines += output_tail(conversation, "  ")
    if conversation.timeline:
        lines.append("  timeline:")
        lines += timeline_lines(conversation, now)
    return lines


def settings_lines(settings: Settings) -> list[str]:
    tokens = ", ".join(
        f"{name} {'set' if is_set else 'not set'}" for name, is_set in sorted(settings.provider_tokens_set.items())
    )
    fields = [
        ("agent", settings.agent),
        ("max iterations", str(settings.max_iterations)),
        ("confirmation", "on" if settings.confirmation_mode else "off"),
        ("security analyzer", settings.security_analyzer or "-"),
        ("llm model", settings.llm_model or "-"),
        ("llm base url", settings.llm_base_url or "-"),
        ("llm api key", "set" if settings.llm_api_key_set else "not set"),
        ("provider tokens", tokens or "none"),
        ("sandbox image", settings.sandbox_base_container_image or "-"),
        ("event sources", ", ".join(settings.authorized_event_sources) or "none"),
        ("updated", _when(settings.updated_at)),
    ]
    return [f"{name:<19}{value}" for name, value in fields]


def quota_lines(quota: Quota) -> list[str]:
    at_limit = {
        "close_oldest": "a new conversation closes the least recently active one",
        "reject": "a new conversation is refused (CONCURRENCY_LIMIT_REACHED)",
    }.get(quota.policy, quota.policy)
    return [
        f"active conversations: {quota.active} of {quota.limit} ({quota.available} available)",
        f"at the limit ({quota.policy}): {at_limit}",
    ]
