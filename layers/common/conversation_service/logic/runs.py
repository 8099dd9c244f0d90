"""A conversation's runs: the first start is run 1, each POST .../start the next one.

Each run has its own workflow execution, named `<conversation id>` for run 1 (so a redelivered
stream record starts nothing twice, and older tooling finds it) and `<conversation id>-<run>`
after. The workflow passes its execution name to every step, which derives the run from it and
writes only while the conversation is still on that run.
"""

from __future__ import annotations


def execution_name(conversation_id: str, run: int) -> str:
    return conversation_id if run <= 1 else f"{conversation_id}-{run}"


def run_of_execution(conversation_id: str, name: str | None) -> int | None:
    """The run an execution serves; None when the name is absent or not one of ours."""
    if not name:
        return None
    if name == conversation_id:
        return 1
    prefix = f"{conversation_id}-"
    suffix = name.removeprefix(prefix)
    if name.startswith(prefix) and suffix.isdigit() and int(suffix) >= 2:
        return int(suffix)
    return None
