"""The workspace: clone or init, the repository's setup script, git hooks, microagents."""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from openhands_sandbox.context import RepositoryContext
from openhands_sandbox.errors import ErrorCode, SandboxFailure
from openhands_sandbox.git import (
    DEFAULT_USERNAME,
    FetchAccess,
    Git,
    GitCredentials,
    credential_environment,
    git_failure_details,
    looks_like_auth_failure,
    looks_like_missing_ref,
)
from openhands_sandbox.lifecycle import StopController
from openhands_sandbox.logs import fields
from openhands_sandbox.processes import BoundedResult, run_bounded
from openhands_sandbox.users import RunAs

log = logging.getLogger(__name__)

EMPTY_WORKSPACE_NAME = "project"
DEFAULT_BRANCH = "main"
SETUP_SCRIPT = Path(".openhands/setup.sh")
PRE_COMMIT_SCRIPT = Path(".openhands/pre-commit.sh")
MICROAGENTS_DIR = Path(".openhands/microagents")
OUTPUT_TAIL_BYTES = 4096
COMMIT_USER_NAME = "openhands"
COMMIT_USER_EMAIL = "openhands@all-hands.dev"
HOOK_MARKER = "This hook was installed by OpenHands"
PRE_COMMIT_HOOK = f"""#!/bin/bash
# {HOOK_MARKER}
# It runs the hook that was here before (pre-commit.local), then .openhands/pre-commit.sh.
hooks_dir="$(cd "$(dirname "$0")" && pwd)"
if [ -x "$hooks_dir/pre-commit.local" ]; then
    "$hooks_dir/pre-commit.local" "$@" || exit $?
fi
script="$(git rev-parse --show-toplevel)/{PRE_COMMIT_SCRIPT}"
if [ -f "$script" ]; then
    bash "$script" "$@"
    exit $?
fi
echo "Warning: {PRE_COMMIT_SCRIPT} not found" >&2
exit 0
"""


@dataclass(frozen=True)
class Workspace:
    path: Path


# --- clone or init ------------------------------------------------------------------------


def prepare_workspace(
    *,
    git: Git,
    workspace_root: Path,
    repository: RepositoryContext | None,
    workspace_branch: str | None,
    fetch_depth: int,
    scratch_dir: Path,
) -> Workspace:
    """Clone the repository at its recorded commit, or init an empty repository."""
    workspace_root.mkdir(parents=True, exist_ok=True)
    if repository is None:
        workspace = init_empty_workspace(git, workspace_root, workspace_branch or DEFAULT_BRANCH)
    else:
        workspace = clone_at_commit(
            git,
            destination=workspace_root / repository.name,
            repository=repository,
            branch=workspace_branch or repository.branch or DEFAULT_BRANCH,
            fetch_depth=fetch_depth,
            scratch_dir=scratch_dir,
        )
    ensure_commit_identity(git, workspace.path)
    return workspace


def init_empty_workspace(git: Git, workspace_root: Path, branch: str) -> Workspace:
    path = workspace_root / EMPTY_WORKSPACE_NAME
    require_empty_directory(path)
    require_valid_branch_name(git, branch, workspace_root)
    git.check(
        ["init", "-q", "-b", branch, str(path)],
        cwd=workspace_root,
        code=ErrorCode.CLONE_FAILED,
        message="Could not create an empty git repository for the workspace.",
    )
    return Workspace(path=path)


def clone_at_commit(
    git: Git,
    *,
    destination: Path,
    repository: RepositoryContext,
    branch: str,
    fetch_depth: int,
    scratch_dir: Path,
) -> Workspace:
    """``git init`` + ``fetch <commit>`` + ``checkout -B <branch> <commit>``: a shallow clone."""
    require_empty_directory(destination)
    require_valid_branch_name(git, branch, destination.parent)
    clone_failed = f"Could not clone {repository.clone_url}."
    git.check(
        ["init", "-q", str(destination)],
        cwd=destination.parent,
        code=ErrorCode.CLONE_FAILED,
        message=clone_failed,
    )
    git.check(
        ["remote", "add", "origin", repository.clone_url],
        cwd=destination,
        code=ErrorCode.CLONE_FAILED,
        message=clone_failed,
    )
    credentials = _credentials(repository)
    with credential_environment(credentials, repository.clone_url, scratch_dir) as access:
        fetch_commit(git, destination, repository, access, fetch_depth)
    git.check(
        ["checkout", "-q", "-B", branch, repository.commit],
        cwd=destination,
        code=ErrorCode.CLONE_FAILED,
        message=f"Could not check out commit {repository.commit} as branch {branch}.",
    )
    checked_out = head_commit(git, destination)
    if checked_out != repository.commit:
        raise SandboxFailure(
            ErrorCode.CLONE_FAILED,
            f"The workspace is at {checked_out} instead of commit {repository.commit}.",
        )
    if repository.branch:
        track_remote_branch(git, destination, repository.branch)
    return Workspace(path=destination)


def fetch_commit(
    git: Git,
    repo_dir: Path,
    repository: RepositoryContext,
    access: FetchAccess,
    fetch_depth: int,
) -> None:
    """Fetch the recorded commit itself; if the server refuses, fetch the branch instead."""
    depth = [f"--depth={fetch_depth}"] if fetch_depth > 0 else []
    by_commit = _fetch(git, repo_dir, access, [*depth, "origin", repository.commit])
    if by_commit.returncode == 0 and not by_commit.timed_out:
        return
    raise_if_auth_failure(by_commit, repository)
    if by_commit.timed_out or not looks_like_missing_ref(by_commit.output):
        raise SandboxFailure(
            ErrorCode.CLONE_FAILED,
            f"Could not fetch {repository.clone_url}" + (" (timed out)." if by_commit.timed_out else "."),
            git_failure_details(["fetch", "origin", repository.commit], by_commit),
        )
    log.info(
        "the server refused to fetch by commit; fetching the branch instead",
        extra=fields(branch=repository.branch),
    )
    fetch_branch_history(git, repo_dir, repository, access)
    if git.run(["cat-file", "-e", f"{repository.commit}^{{commit}}"], cwd=repo_dir).returncode != 0:
        where = f"branch {repository.branch}" if repository.branch else "any branch"
        raise SandboxFailure(
            ErrorCode.REF_NOT_FOUND,
            f"Commit {repository.commit} is not on {where} of {repository.clone_url}; "
            "it may have been force-pushed away. Start the conversation again.",
            {"commit": repository.commit, "branch": repository.branch},
        )


def fetch_branch_history(git: Git, repo_dir: Path, repository: RepositoryContext, access: FetchAccess) -> None:
    """Fetch the whole history of the branch (or of every branch when none is named)."""
    refspec = [f"+refs/heads/{repository.branch}:refs/remotes/origin/{repository.branch}"] if repository.branch else []
    result = _fetch(git, repo_dir, access, ["origin", *refspec])
    if result.returncode == 0 and not result.timed_out:
        return
    raise_if_auth_failure(result, repository)
    details = git_failure_details(["fetch", "origin", *refspec], result)
    if not result.timed_out and looks_like_missing_ref(result.output):
        raise SandboxFailure(
            ErrorCode.REF_NOT_FOUND,
            f"Branch {repository.branch} does not exist in {repository.clone_url}.",
            details,
        )
    raise SandboxFailure(ErrorCode.CLONE_FAILED, f"Could not fetch {repository.clone_url}.", details)


def raise_if_auth_failure(result: BoundedResult, repository: RepositoryContext) -> None:
    if not result.timed_out and looks_like_auth_failure(result.output):
        raise SandboxFailure(
            ErrorCode.REPO_AUTH_FAILED,
            f"The git server refused our credentials for {repository.clone_url}; "
            "reconnect the git provider or check the token's access to this repository.",
            git_failure_details(["fetch", "origin"], result),
        )


def _fetch(git: Git, repo_dir: Path, access: FetchAccess, args: list[str]) -> BoundedResult:
    return git.run([*access.options, "fetch", "--no-tags", *args], cwd=repo_dir, env=access.env)


def _credentials(repository: RepositoryContext) -> GitCredentials | None:
    if not repository.password:
        return None
    return GitCredentials(repository.username or DEFAULT_USERNAME, repository.password)


def track_remote_branch(git: Git, repo_dir: Path, branch: str) -> None:
    """Make ``origin/<branch>`` the upstream of the local branch (config only, no fetch)."""
    for key, value in (
        (f"branch.{branch}.remote", "origin"),
        (f"branch.{branch}.merge", f"refs/heads/{branch}"),
    ):
        git.check(
            ["config", key, value],
            cwd=repo_dir,
            code=ErrorCode.CLONE_FAILED,
            message=f"Could not configure branch {branch}.",
        )


def ensure_commit_identity(git: Git, repo_dir: Path) -> None:
    """Give the repository OpenHands' commit identity unless git already has one."""
    if git.output_of(["config", "user.email"], cwd=repo_dir):
        return
    for key, value in (
        ("user.name", COMMIT_USER_NAME),
        ("user.email", COMMIT_USER_EMAIL),
    ):
        git.check(
            ["config", key, value],
            cwd=repo_dir,
            code=ErrorCode.CLONE_FAILED,
            message="Could not configure the commit identity of the workspace.",
        )


def require_empty_directory(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SandboxFailure(
            ErrorCode.CLONE_FAILED,
            f"The workspace directory {path} already exists and is not empty.",
        )


def require_valid_branch_name(git: Git, branch: str, cwd: Path) -> None:
    if git.run(["check-ref-format", "--branch", branch], cwd=cwd).returncode != 0:
        raise SandboxFailure(
            ErrorCode.REF_NOT_FOUND,
            f"{branch!r} is not a valid git branch name.",
            {"branch": branch},
        )


def head_commit(git: Git, repo_dir: Path) -> str | None:
    """The commit checked out, or None in a repository without commits."""
    return git.output_of(["rev-parse", "--verify", "-q", "HEAD"], cwd=repo_dir) or None


COMMIT_PATTERN = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def head_commit_from_files(repo_dir: Path) -> str | None:
    """The commit checked out, read from ``.git`` without running git (so without running any
    command the repository's config names): HEAD, the ref it names, or packed-refs. None when it
    cannot be read that way (no commit yet, an unusual layout)."""
    git_dir = repo_dir / ".git"
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if COMMIT_PATTERN.match(head):
            return head
        if not head.startswith("ref: refs/"):
            return None
        ref = head.removeprefix("ref: ")
        if ".." in ref.split("/"):
            return None
        loose = git_dir / ref
        if loose.is_file():
            value = loose.read_text().strip()
            return value if COMMIT_PATTERN.match(value) else None
        for line in (git_dir / "packed-refs").read_text().splitlines():
            value, _, name = line.partition(" ")
            if name == ref and COMMIT_PATTERN.match(value):
                return value
    except OSError:
        return None
    return None


# --- setup script -------------------------------------------------------------------------


def run_setup_script(
    repo_dir: Path,
    *,
    env: Mapping[str, str],
    timeout_seconds: float,
    stop: StopController,
    run_as: RunAs | None = None,
) -> bool:
    """Run ``.openhands/setup.sh`` if the repository has one (as ``run_as``); True if it ran."""
    if not (repo_dir / SETUP_SCRIPT).is_file():
        return False
    result = run_bounded(
        ["bash", str(SETUP_SCRIPT)],
        cwd=repo_dir,
        env=env,
        timeout_seconds=timeout_seconds,
        stop=stop,
        output_limit=OUTPUT_TAIL_BYTES,
        run_as=run_as,
    )
    if result.timed_out:
        raise SandboxFailure(
            ErrorCode.SETUP_SCRIPT_FAILED,
            f"{SETUP_SCRIPT} did not finish within the {timeout_seconds:g} second timeout "
            "and was stopped; make it faster or raise the setup script timeout.",
            {
                "timed_out": True,
                "timeout_seconds": timeout_seconds,
                "output_tail": result.output,
            },
        )
    if result.returncode != 0:
        raise SandboxFailure(
            ErrorCode.SETUP_SCRIPT_FAILED,
            f"{SETUP_SCRIPT} exited with status {result.returncode}; "
            "see the end of its output in the details and fix the script.",
            {
                "exit_code": result.returncode,
                "timed_out": False,
                "output_tail": result.output,
            },
        )
    log.info("setup script finished", extra=fields(output_tail=result.output[-1024:]))
    return True


# --- git hooks and microagents ------------------------------------------------------------


def install_pre_commit_hook(repo_dir: Path) -> bool:
    """Install a pre-commit hook running ``.openhands/pre-commit.sh``; True if installed.

    As OpenHands does: a hook already there that is not ours moves to
    ``pre-commit.local`` and runs first.
    """
    if not (repo_dir / PRE_COMMIT_SCRIPT).is_file():
        return False
    hooks_dir = repo_dir / ".git" / "hooks"
    hook = hooks_dir / "pre-commit"
    local_hook = hooks_dir / "pre-commit.local"
    try:
        hooks_dir.mkdir(parents=True, exist_ok=True)
        if hook.exists() and HOOK_MARKER not in hook.read_text(errors="replace"):
            hook.replace(local_hook)
            _make_executable(local_hook)
        hook.write_text(PRE_COMMIT_HOOK)
        _make_executable(hook)
    except OSError as error:
        raise SandboxFailure(
            ErrorCode.GIT_HOOKS_FAILED,
            f"Could not install the pre-commit hook that runs {PRE_COMMIT_SCRIPT}: {error.strerror}.",
        ) from error
    return True


def _make_executable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def list_microagents(repo_dir: Path) -> list[str]:
    """Names (without ``.md``) of the repository's ``.openhands/microagents/*.md`` files."""
    directory = repo_dir / MICROAGENTS_DIR
    if not directory.is_dir():
        return []
    return sorted(path.stem for path in directory.glob("*.md") if path.is_file())
