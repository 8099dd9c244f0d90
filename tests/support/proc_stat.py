"""What /proc says of a process's threads."""

from __future__ import annotations

import contextlib
from pathlib import Path


def thread_niceness(pid: int) -> set[int]:
    """The niceness of every thread of ``pid`` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    values = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            values.add(int(task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[16]))
    return values


def autogroup_niceness(pid: int) -> int | None:
    """The niceness of the autogroup (session) ``pid`` is in; None on a kernel without autogroups."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except FileNotFoundError:
        return None
