"""Run a command in a filesystem view of its own, as a container would have: ``python sandbox_view.py
[--private-tmp DIR] --expose DIR [--expose DIR ...] -- COMMAND ...`` (as root).

A local sandbox run as root gives its setup script and agent-server unprivileged uids; those
cannot pass through directories such as root's home (where pyenv keeps the Python) or pytest's
temporary directories (mode 0700). In a private mount namespace, each such directory on the way
to an exposed path is covered by an empty tmpfs (mode 0711) in which only the exposed paths are
mounted again: the sandbox reaches what it needs and sees nothing else of them. Paths that every
user can already reach are left as they are. ``--private-tmp``: DIR is mounted on /tmp, so the
sandbox has a /tmp of its own as in a container (programs that ignore TMPDIR write there; exposed
paths under /tmp are mounted into it). Standard library only: it runs before anything is
importable.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from pathlib import Path

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    encoded = [value.encode() if value is not None else None for value in (source, target, fstype, data)]
    if libc.mount(encoded[0], encoded[1], encoded[2], ctypes.c_ulong(flags), encoded[3]) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), target)


def hidden_ancestor(path: Path) -> Path | None:
    """The directory closest to / on the way to ``path`` that other users cannot pass through."""
    for directory in reversed(path.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            return directory
    return None


TMP = Path("/tmp")  # noqa: S108 - the directory a private one replaces


def plan(exposed: list[Path], private_tmp: bool = False) -> dict[Path | None, list[Path]]:
    """Hidden directory (None: the private /tmp) -> the exposed paths to mount in it again."""
    covers: dict[Path | None, list[Path]] = {}
    kept: list[Path] = []
    for path in sorted({path.resolve() for path in exposed}, key=lambda item: len(item.parts)):
        if any(path.is_relative_to(parent) for parent in kept):
            continue
        hidden = None if private_tmp and path.is_relative_to(TMP) else hidden_ancestor(path)
        if hidden is not None or (private_tmp and path.is_relative_to(TMP)):
            kept.append(path)
            covers.setdefault(hidden, []).append(path)
    return covers


def enter_view(exposed: list[Path], private_tmp: Path | None = None) -> None:
    covers = plan(exposed, private_tmp is not None)
    if not covers and private_tmp is None:
        return
    os.unshare(os.CLONE_NEWNS)
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for paths in covers.values() for path in paths}
    if private_tmp is not None:
        _mount(str(private_tmp), str(TMP), None, MS_BIND, None)
    for hidden in covers:
        if hidden is not None:
            hidden.mkdir(mode=0o711, parents=True, exist_ok=True)
            _mount("tmpfs", str(hidden), "tmpfs", 0, "mode=0711,size=1m")
    for path, handle in handles.items():
        path.mkdir(mode=0o711, parents=True, exist_ok=True)
        _mount(f"/proc/self/fd/{handle}", str(path), None, MS_BIND | MS_REC, None)
        os.close(handle)


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: sandbox_view.py --expose DIR [...] -- COMMAND ...")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    exposed = [Path(options[index + 1]) for index, option in enumerate(options) if option == "--expose"]
    private_tmp = [Path(options[index + 1]) for index, option in enumerate(options) if option == "--private-tmp"]
    enter_view(exposed, private_tmp[0] if private_tmp else None)
    os.execvp(command[0], command)  # noqa: S606 - the command as given, like exec(1)


def view_command(exposed: list[Path], private_tmp: Path | None = None, python: str = sys.executable) -> list[str]:
    """The argv prefix that runs a command in a view exposing ``exposed``, with ``private_tmp`` as
    its /tmp (empty when not root: no view can be made)."""
    if os.geteuid() != 0 or (private_tmp is None and not plan(exposed)):
        return []
    prefix = [python, str(Path(__file__).resolve())]
    if private_tmp is not None:
        prefix += ["--private-tmp", str(private_tmp)]
    for path in exposed:
        prefix += ["--expose", str(path)]
    return [*prefix, "--"]


def python_installation(python: str | Path) -> Path:
    """The installation directory of a Python (a venv's interpreter is a link into it)."""
    return Path(os.path.realpath(python)).parents[1]


if __name__ == "__main__":
    main(sys.argv[1:])
