"""Input rules that need more than a type: conversation ids and git branch names."""

from __future__ import annotations

import re

from conversation_service.models.errors import InvalidBranchName, InvalidConversationId

MAX_CONVERSATION_ID_LENGTH = 100
MAX_BRANCH_NAME_LENGTH = 255


def _has_control_character(value: str) -> bool:
    return any(ord(char) < 32 or ord(char) == 127 for char in value)


def validate_conversation_id(conversation_id: str) -> str:
    """The spec's rules for a conversation id in a path; the message names the broken rule."""
    if not conversation_id:
        raise InvalidConversationId("Invalid conversation ID: it is empty")
    if len(conversation_id) > MAX_CONVERSATION_ID_LENGTH:
        raise InvalidConversationId(f"Invalid conversation ID: longer than {MAX_CONVERSATION_ID_LENGTH} characters")
    if "\x00" in conversation_id:
        raise InvalidConversationId("Invalid conversation ID: contains a null byte")
    if ".." in conversation_id or "/" in conversation_id or "\\" in conversation_id:
        raise InvalidConversationId("Invalid conversation ID: contains invalid path characters ('..', '/' or '\\')")
    if _has_control_character(conversation_id):
        raise InvalidConversationId("Invalid conversation ID: contains control characters")
    return conversation_id


_FORBIDDEN_BRANCH_CHARACTERS = re.compile(r"[ ~^:?*\[\\]")


def branch_name_problem(name: str) -> str | None:
    """Why `name` is not a valid branch name under `git check-ref-format --branch`, or None."""
    if not name:
        return "it is empty"
    if len(name) > MAX_BRANCH_NAME_LENGTH:
        return f"it is longer than {MAX_BRANCH_NAME_LENGTH} characters"
    if _has_control_character(name):
        return "it contains control characters"
    if match := _FORBIDDEN_BRANCH_CHARACTERS.search(name):
        return f"it contains the character {match.group()!r}"
    if name.startswith("-"):
        return "it starts with '-'"
    # git refuses refs/heads/HEAD; a lone "@" is fine under refs/heads/ (only the full refname "@" is not).
    if name == "HEAD":
        return "it is 'HEAD'"
    if "@{" in name:
        return "it contains '@{'"
    if ".." in name:
        return "it contains '..'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "it has an empty path component"
    if name.endswith("."):
        return "it ends with '.'"
    for component in name.split("/"):
        if component.startswith("."):
            return "a path component starts with '.'"
        if component.endswith(".lock"):
            return "a path component ends with '.lock'"
    return None


def validate_branch_name(name: str) -> str:
    if problem := branch_name_problem(name):
        raise InvalidBranchName(f"Invalid branch name {name[:100]!r}: {problem}")
    return name
