"""Limits on what a JSON body may be before anything parses it.

`json.loads` recurses once per level of nesting: a body of 100 000 `[` raises RecursionError,
which no handler expects (a 500, and an alarm). Bodies are measured first, without parsing:
their size, and how deep their arrays and objects nest (strings are skipped, so brackets inside
them do not count). The API answers a refusal in the spec's error body (http_errors.py).
"""

from __future__ import annotations

import re

# Deep enough for every body of the API (an MCP configuration nests 4 levels) and for an
# OpenHands trajectory in replay_json; far below Python's recursion limit (1000).
MAX_JSON_DEPTH = 64
# Lambda's limit for a synchronous invocation's payload: a larger body cannot be ours.
MAX_REQUEST_BODY_BYTES = 6 * 1024 * 1024

# A string literal, unrolled (runs of plain characters between escapes): one alternation per
# character made a 6 MB string take seconds to skip.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str | bytes, *, stop_above: int = MAX_JSON_DEPTH) -> int:
    """How deep `text`'s arrays and objects nest (counting stops once past `stop_above`)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if "[" not in text and "{" not in text:
        return 0
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    return deepest
        else:
            depth = max(0, depth - 1)
    return deepest
