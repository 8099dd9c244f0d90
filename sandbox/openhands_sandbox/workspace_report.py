"""What the agent changed in the workspace, computed with git, for ``POST /v1/workspace``.

The diff is taken between the commit the workspace started at (``base_commit``, the commit
reported in ``ready``; the empty tree in a repository without commits) and the working tree, so
it holds what the agent committed and what it did not, untracked files included (ignored ones
are not). Nothing is written to the repository: untracked files are added *intent-to-add* to a
throw-away index (``GIT_INDEX_FILE`` in a private temporary directory), and the one object that
writes (the empty blob) goes to a throw-away object directory that borrows the repository's.

Every git command runs with the user and environment the caller gives (the agent's own user
when the bootstrap runs as root: the repository and its ``.git/config`` are the agent's, so
anything they make git run runs as the agent), with external diff drivers and text conversion
off, a time limit and a cap on what is read of its output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from openhands_sandbox.logs import fields

log = logging.getLogger(__name__)

DEFAULT_DIFF_CAP_BYTES = 512 * 1024
MAX_FILES = 2000
GIT_TIMEOUT_SECONDS = 60.0
STATUS_NAMES = {"A": "added", "M": "modified", "T": "modified", "D": "deleted"}
SAFE_GIT_OPTIONS = (
    "-c",
    "core.quotePath=off",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "diff.noprefix=false",
    "-c",
    "color.ui=never",
)
DIFF_OPTIONS = ("--no-ext-diff", "--no-textconv", "--no-renames", "--no-color", "--ignore-submodules=none")


class WorkspaceReportError(RuntimeError):
    """git could not describe the workspace."""


@dataclass(frozen=True)
class ChangedFile:
    path: str
    status: str
    """``added`` (untracked files too), ``modified`` or ``deleted``."""
    additions: int
    deletions: int
    """Line counts; 0 and 0 for a binary file."""


@dataclass(frozen=True)
class WorkspaceReport:
    branch: str | None
    head_commit: str | None
    files: list[ChangedFile]
    diff: str
    diff_truncated: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GitRunner:
    """How to run git in the workspace: environment, and the user to run as (None: ours)."""

    env: Mapping[str, str]
    user: int | None = None
    group: int | None = None
    timeout_seconds: float = GIT_TIMEOUT_SECONDS
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def with_env(self, **values: str) -> GitRunner:
        return GitRunner(self.env, self.user, self.group, self.timeout_seconds, {**self.extra_env, **values})

    def run(
        self,
        args: Sequence[str],
        cwd: Path,
        *,
        output_cap: int,
        ok_codes: Sequence[int] = (0,),
        stdin: bytes | None = None,
    ) -> tuple[bytes, bool]:
        """git ``args``: (stdout up to ``output_cap`` bytes, whether more was cut off); raises on
        failure or timeout."""
        return self.command(
            ["git", *SAFE_GIT_OPTIONS, *args], cwd, output_cap=output_cap, ok_codes=ok_codes, stdin=stdin
        )

    def command(
        self,
        argv: Sequence[str],
        cwd: Path,
        *,
        output_cap: int,
        ok_codes: Sequence[int] = (0,),
        stdin: bytes | None = None,
        name: str | None = None,
    ) -> tuple[bytes, bool]:
        """Any program, as the runner's user, with its environment and time limit."""
        env = {**self.env, **self.extra_env, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
        name = name or argv[0]
        with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors, tempfile.TemporaryFile() as given:
            given.write(stdin or b"")
            given.seek(0)
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=given,
                stdout=output,
                stderr=errors,
                start_new_session=True,
                **self._identity(),
            )
            try:
                returncode = process.wait(timeout=self.timeout_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, 9)
                process.wait()
                raise WorkspaceReportError(f"{name} took longer than {self.timeout_seconds:g} s") from None
            if returncode not in ok_codes:
                errors.seek(0)
                said = errors.read(4096).decode(errors="replace").strip().splitlines()
                raise WorkspaceReportError(f"{name} exited with status {returncode}: {said[-1] if said else ''}")
            size = output.seek(0, os.SEEK_END)
            output.seek(0)
            return output.read(output_cap), size > output_cap

    def _identity(self) -> dict[str, Any]:
        if self.user is None or os.geteuid() != 0:
            return {}
        return {"user": self.user, "group": self.group if self.group is not None else self.user, "extra_groups": []}

    def private_directory(self) -> Path:
        """A new temporary directory (with ``objects/`` in it) in the runner's user's TMPDIR, made by
        that user: nothing is created or written as root where another user could swap a path."""
        made, _ = self.command(["mktemp", "-d", "-t", "oh-workspace-report-XXXXXXXX"], Path("/"), output_cap=4096)
        directory = Path(made.decode().strip())
        self.command(["mkdir", "-m", "700", str(directory / "objects")], Path("/"), output_cap=0)
        return directory

    def remove(self, directory: Path) -> None:
        with contextlib.suppress(WorkspaceReportError, OSError):
            self.command(["rm", "-rf", "--", str(directory)], Path("/"), output_cap=0)


def workspace_report(
    repo: Path,
    base_commit: str | None,
    runner: GitRunner,
    *,
    diff_cap_bytes: int = DEFAULT_DIFF_CAP_BYTES,
) -> WorkspaceReport:
    """Branch, HEAD, changed files with line counts and the unified diff against ``base_commit``."""
    branch = _query(runner, ["symbolic-ref", "--short", "-q", "HEAD"], repo, ok_codes=(0, 1))
    head = _query(runner, ["rev-parse", "--verify", "-q", "HEAD"], repo, ok_codes=(0, 1))
    base = base_commit or _query(runner, ["hash-object", "-t", "tree", "/dev/null"], repo)
    if not base:
        raise WorkspaceReportError("no commit to compare with")
    objects = _query(runner, ["rev-parse", "--path-format=absolute", "--git-path", "objects"], repo)
    scratch = runner.private_directory()
    try:
        indexed = runner.with_env(
            GIT_INDEX_FILE=str(scratch / "index"),
            GIT_OBJECT_DIRECTORY=str(scratch / "objects"),
            GIT_ALTERNATE_OBJECT_DIRECTORIES=objects or "",
        )
        if head:
            indexed.run(["read-tree", head], repo, output_cap=0)
        untracked, _ = indexed.run(["ls-files", "-z", "--others", "--exclude-standard"], repo, output_cap=16 << 20)
        paths = [path for path in untracked.decode(errors="surrogateescape").split("\0") if path]
        if paths:
            indexed.run(
                ["add", "--intent-to-add", "--pathspec-file-nul", "--pathspec-from-file=-"],
                repo,
                output_cap=0,
                stdin=b"\0".join(path.encode(errors="surrogateescape") for path in paths[:MAX_FILES]),
            )
        files = _changed_files(indexed, repo, base)
        diff, truncated = indexed.run(["diff", *DIFF_OPTIONS, base, "--"], repo, output_cap=diff_cap_bytes)
    finally:
        runner.remove(scratch)
    text = diff.decode("utf-8", errors="replace")
    if truncated and "\n" in text:
        text = text[: text.rindex("\n") + 1]  # whole lines only
    return WorkspaceReport(branch=branch, head_commit=head, files=files, diff=text, diff_truncated=truncated)


def _changed_files(runner: GitRunner, repo: Path, base: str) -> list[ChangedFile]:
    statuses_raw, _ = runner.run(["diff", *DIFF_OPTIONS, "--name-status", "-z", base, "--"], repo, output_cap=16 << 20)
    counts_raw, _ = runner.run(["diff", *DIFF_OPTIONS, "--numstat", "-z", base, "--"], repo, output_cap=16 << 20)
    statuses = statuses_raw.decode(errors="replace").split("\0")
    status_of = {statuses[i + 1]: statuses[i] for i in range(0, len(statuses) - 1, 2)}
    files = []
    for entry in counts_raw.decode(errors="replace").split("\0"):
        if not entry:
            continue
        added, deleted, path = entry.split("\t", 2)
        files.append(
            ChangedFile(
                path=path,
                status=STATUS_NAMES.get(status_of.get(path, "M")[:1], "modified"),
                additions=int(added) if added.isdigit() else 0,
                deletions=int(deleted) if deleted.isdigit() else 0,
            )
        )
    return files[:MAX_FILES]


def _query(runner: GitRunner, args: list[str], repo: Path, *, ok_codes: Sequence[int] = (0,)) -> str | None:
    output, _ = runner.run(args, repo, output_cap=4096, ok_codes=ok_codes)
    return output.decode(errors="replace").strip() or None


class WorkspacePublisher:
    """Computes the report and posts it; called by the relay before a "stopped working" status."""

    def __init__(
        self, client: Any, repo: Path, base_commit: str | None, runner: GitRunner, diff_cap_bytes: int
    ) -> None:
        self.client = client
        self.repo = repo
        self.base_commit = base_commit
        self.runner = runner
        self.diff_cap_bytes = diff_cap_bytes
        self.published = 0

    def publish(self, status: str) -> None:
        """Post the current report. A git failure is logged and skipped; a failed post raises (retried)."""
        try:
            report = workspace_report(self.repo, self.base_commit, self.runner, diff_cap_bytes=self.diff_cap_bytes)
        except (WorkspaceReportError, OSError) as error:
            log.warning("no workspace report", extra=fields(problem=str(error), agent_status=status))
            return
        self.client.post_workspace(report.to_json())
        self.published += 1
        log.info(
            "workspace published",
            extra=fields(agent_status=status, files=len(report.files), diff_truncated=report.diff_truncated),
        )
