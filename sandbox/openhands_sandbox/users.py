"""Who runs what: the bootstrap (root) and the two unprivileged users of a sandbox.

The bootstrap is the only process that holds the sandbox token. When it starts as root it
runs the repository's setup script as the *setup user* and the agent-server as the *agent
user*, each with a private HOME and TMPDIR, and kills every process of a user (found by uid,
so a daemon that left its process group dies too) before the next stage gets anything
secret. Without root no separation is possible: children run as the bootstrap's own uid
(one warning), with private HOME/TMPDIR all the same. See docs/security.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openhands_sandbox.logs import fields

log = logging.getLogger(__name__)

KILL_ROUNDS = 50
KILL_PAUSE_SECONDS = 0.02
KILL_TIMEOUT_SECONDS = 10.0
SHARED_TEMPORARY_DIRECTORIES = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))  # noqa: S108
"""Where a program that ignores TMPDIR (browser-use's downloads, for one) still writes."""
TMUX_DIR_MAX_LENGTH = 80
"""tmux puts its socket at ``$TMUX_TMPDIR/tmux-<uid>/default``; a unix socket path holds
about 107 bytes, so a longer TMUX_TMPDIR falls back to a private directory in /tmp."""


@dataclass(frozen=True)
class RunAs:
    """The identity a child process takes (set in the child before ``exec``)."""

    uid: int
    gid: int

    def popen_options(self) -> dict[str, Any]:
        """``subprocess.Popen`` keywords: uid, gid and no supplementary groups (root's)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@dataclass(frozen=True)
class SandboxUser:
    role: str
    """``setup`` or ``agent`` (for logs)."""
    uid: int
    gid: int
    home: Path
    tmp: Path
    run_as: RunAs | None
    """None when the bootstrap is not root: the child keeps the bootstrap's identity."""

    def environment(self) -> dict[str, str]:
        """The variables that make this user's programs use its own directories."""
        return {
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "TMP": str(self.tmp),
            "TEMP": str(self.tmp),
            "USER": f"openhands-{self.role}",
            "LOGNAME": f"openhands-{self.role}",
        }

    def popen_options(self) -> dict[str, Any]:
        return self.run_as.popen_options() if self.run_as else {}


@dataclass(frozen=True)
class SandboxUsers:
    """The private directories of one sandbox run and the users that own them.

    ``root`` (mode 0711: others may pass through, not list) holds ``bootstrap/`` (the
    bootstrap's own files, 0700), and ``setup-home``, ``setup-tmp``, ``agent-home``,
    ``agent-tmp``, ``agent-state`` (0700, each owned by its user). All of it is removed
    when the sandbox stops.
    """

    root: Path
    bootstrap_dir: Path
    setup: SandboxUser
    agent: SandboxUser
    agent_state: Path
    separated: bool

    @classmethod
    def create(cls, parent: Path, prefix: str, setup_uid: int, agent_uid: int) -> SandboxUsers:
        separated = os.geteuid() == 0
        if not separated:
            log.warning(
                "not running as root: the setup script and the agent-server run as this uid, "
                "with no separation from the bootstrap",
                extra=fields(uid=os.geteuid()),
            )
            setup_uid = agent_uid = os.geteuid()
        parent.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        root.chmod(0o711)
        bootstrap_dir = root / "bootstrap"
        bootstrap_dir.mkdir(mode=0o700)
        gids = {"setup": setup_uid, "agent": agent_uid}

        def user(role: str, uid: int) -> SandboxUser:
            run_as = RunAs(uid, gids[role]) if separated else None
            made = SandboxUser(role, uid, gids[role], root / f"{role}-home", root / f"{role}-tmp", run_as)
            for directory in (made.home, made.tmp):
                private_directory(directory, made)
            return made

        setup = user("setup", setup_uid)
        agent = user("agent", agent_uid)
        agent_state = root / "agent-state"
        private_directory(agent_state, agent)
        return cls(root, bootstrap_dir, setup, agent, agent_state, separated)

    def tmux_directory(self) -> Path:
        """TMUX_TMPDIR of the agent-server: in its TMPDIR when the socket path fits."""
        preferred = self.agent.tmp / "tmux"
        if len(str(preferred)) <= TMUX_DIR_MAX_LENGTH:
            private_directory(preferred, self.agent)
            return preferred
        short_root = Path("/tmp")  # noqa: S108 - mkdtemp makes a private directory in it
        parent = short_root if os.access(short_root, os.W_OK) else None
        directory = Path(tempfile.mkdtemp(prefix="oh-tmux-", dir=parent))
        give_to(directory, self.agent)
        return directory

    def end_processes_of(self, user: SandboxUser) -> int:
        """Kill every process of ``user`` (separated runs only); returns how many were seen."""
        if not self.separated:
            return 0
        return kill_processes_of(user.uid, user.gid)

    def remove_files_of(self, user: SandboxUser) -> None:
        """Delete what ``user`` left in the machine's temporary directories (separated runs only;
        every process of the user must be gone)."""
        if not self.separated:
            return
        for directory in SHARED_TEMPORARY_DIRECTORIES:
            with contextlib.suppress(OSError):
                for entry in directory.iterdir():
                    with contextlib.suppress(OSError):
                        if entry.lstat().st_uid != user.uid:
                            continue
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink()

    def hand_workspace_to(self, workspace_root: Path, user: SandboxUser, previous_owner: int) -> None:
        """Give ``workspace_root`` and everything in it that ``previous_owner`` owns to ``user``.

        Runs only while no process of either user is alive, so nothing can swap a file under
        it. Symbolic links are changed themselves, never followed; an entry owned by anyone
        else (a hard link to a file of root's, say) is left alone.
        """
        if not self.separated:
            return
        os.lchown(workspace_root, user.uid, user.gid)
        workspace_root.chmod(0o700)
        for directory, subdirectories, files in os.walk(workspace_root, followlinks=False):
            for name in (*subdirectories, *files):
                path = os.path.join(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    if os.lstat(path).st_uid == previous_owner:
                        os.lchown(path, user.uid, user.gid)

    @contextmanager
    def acting_as(self, user: SandboxUser) -> Iterator[None]:
        """File operations inside the block are checked against ``user``'s permissions.

        For work the bootstrap does itself in a tree that user controlled (a symbolic link
        planted there cannot make root write or list outside it).
        """
        if not self.separated:
            yield
            return
        groups = os.getgroups()
        os.setgroups([])
        os.setegid(user.gid)
        os.seteuid(user.uid)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(0)
            os.setgroups(groups)

    def remove(self, *extra: Path) -> None:
        """Delete the sandbox's private directories (every child must be gone)."""
        for path in (self.root, *extra):
            shutil.rmtree(path, ignore_errors=True)


def private_directory(path: Path, user: SandboxUser) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    give_to(path, user)


def give_to(path: Path, user: SandboxUser) -> None:
    path.chmod(0o700)
    if user.run_as is not None:
        os.lchown(path, user.uid, user.gid)


# --- processes by uid ---------------------------------------------------------------------


def process_uids(pid: int) -> tuple[int, ...] | None:
    """Real, effective, saved and filesystem uid of a live process; None if gone or a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values: dict[str, str] = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        values[name] = value.strip()
    if values.get("State", "").startswith(("Z", "X")):
        return None
    return tuple(int(uid) for uid in values.get("Uid", "").split())


def processes_of(uid: int) -> list[int]:
    """Live processes with ``uid`` as any of their uids."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            uids = process_uids(int(entry.name))
            if uids is not None and uid in uids:
                found.append(int(entry.name))
    return found


def kill_processes_of(uid: int, gid: int) -> int:
    """SIGKILL every process of ``uid`` until none is left; returns how many were found.

    ``kill(-1, SIGKILL)`` sent *as* that uid reaches all of them at once (a process that
    forks meanwhile cannot slip through), then a scan of /proc checks and kills stragglers.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + KILL_TIMEOUT_SECONDS
    for _ in range(KILL_ROUNDS):
        pids = processes_of(uid)
        if not pids:
            break
        seen.update(pids)
        subprocess.run(
            ["bash", "-c", "kill -KILL -1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            cwd="/",
            timeout=KILL_TIMEOUT_SECONDS,
            check=False,
            **RunAs(uid, gid).popen_options(),
        )
        for pid in processes_of(uid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            break
        time.sleep(KILL_PAUSE_SECONDS)
    left = processes_of(uid)
    if seen:
        log.info("killed the processes of a sandbox user", extra=fields(uid=uid, count=len(seen), left=len(left)))
    if left:
        raise RuntimeError(f"processes of uid {uid} survived SIGKILL: {left}")
    return len(seen)


# --- reachability -------------------------------------------------------------------------


def unsearchable_ancestor(path: Path, uid: int, gid: int) -> Path | None:
    """The first existing directory on the way to ``path`` that ``uid`` cannot pass through."""
    for directory in reversed([path, *path.parents]):
        try:
            info = directory.stat()
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(info.st_mode):
            continue
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return directory
    return None
