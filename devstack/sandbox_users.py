"""A pair of uids of its own for every local sandbox run as root (the setup user, the agent user).

On Fargate every task is a container of its own; on one machine, two sandboxes with the same
uids could read each other's files and signal each other's processes. Each pair is held by an
exclusive lock on a file (released when the holder exits, even by a crash), so several stacks
and test runs on one machine never share one. Pairs are ``UID_BASE + 2k`` and ``UID_BASE + 2k + 1``;
no /etc/passwd entry is needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from openhands_sandbox.users import kill_processes_of, processes_of

UID_BASE = 200_000
UID_PAIRS = 100_000
LOCK_DIR_NAME = "openhands-sandbox-uids"


@dataclass
class UidPair:
    setup_uid: int
    agent_uid: int
    lock: IO[bytes] = field(repr=False)

    def environment(self) -> dict[str, str]:
        return {"SANDBOX_SETUP_UID": str(self.setup_uid), "SANDBOX_AGENT_UID": str(self.agent_uid)}

    def end(self) -> int:
        """Kill every process of both uids, then give the pair back; returns how many died."""
        try:
            return sum(kill_processes_of(uid, uid) for uid in (self.setup_uid, self.agent_uid))
        finally:
            self.lock.close()


def lock_directory() -> Path:
    run_lock = Path("/run/lock")
    parent = run_lock if os.access(run_lock, os.W_OK) else Path(tempfile.gettempdir())
    directory = parent / LOCK_DIR_NAME
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def allocate_uid_pair() -> UidPair:
    """A free pair, locked for this process until ``end``."""
    directory = lock_directory()
    start = secrets.randbelow(UID_PAIRS)
    for offset in range(UID_PAIRS):
        index = (start + offset) % UID_PAIRS
        lock = (directory / f"{index}.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        setup_uid, agent_uid = UID_BASE + 2 * index, UID_BASE + 2 * index + 1
        if processes_of(setup_uid) or processes_of(agent_uid):  # left by a holder that crashed
            with contextlib.suppress(RuntimeError):
                kill_processes_of(setup_uid, setup_uid)
                kill_processes_of(agent_uid, agent_uid)
        return UidPair(setup_uid, agent_uid, lock)
    raise RuntimeError("every sandbox uid pair is in use")
