"""A local stand-in for GitHub: dulwich's smart-HTTP git server over `<state dir>/repos`.

With `GIT_URL_REWRITES={"https://github.com/": "http://127.0.0.1:<port>/"}` the service resolves
`https://github.com/user/repo.git` and `user/repo` here, so the spec's examples run offline. It
serves the real git protocol (ls-remote, shallow fetch by commit, push) to dulwich in the API
function and to the git binary in the sandboxes.
"""

from __future__ import annotations

import os
import shutil
import socketserver
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from dulwich.errors import NotGitRepository
from dulwich.server import BackendRepo, FileSystemBackend
from dulwich.web import make_wsgi_chain

SAMPLE_OWNER = "user"
SETUP_MARKER = ".openhands_setup_done"


@dataclass(frozen=True)
class SampleFile:
    path: str
    text: str
    executable: bool = False


@dataclass(frozen=True)
class SampleCommit:
    branch: str
    message: str
    files: tuple[SampleFile, ...]


@dataclass(frozen=True)
class SampleRepository:
    name: str  # published as <owner>/<name>.git
    default_branch: str
    commits: tuple[SampleCommit, ...]  # in order; a commit on a new branch starts from the one before


_SETUP_SCRIPT = f"""#!/bin/bash
# Runs once in the sandbox, in the repository, after the clone (OpenHands' .openhands/setup.sh).
set -euo pipefail
branch="$(git rev-parse --abbrev-ref HEAD)"
echo "setup: preparing $(basename "$PWD") on branch $branch"
printf 'setup.sh ran on branch %s at commit %s\\n' "$branch" "$(git rev-parse HEAD)" > {SETUP_MARKER}
echo "setup: wrote {SETUP_MARKER}"
"""

_PRE_COMMIT_SCRIPT = """#!/bin/bash
# Runs before each commit in the sandbox (installed as .git/hooks/pre-commit).
set -euo pipefail
git ls-files -z -- '*.sh' | xargs -0 -r -n1 bash -n
echo "pre-commit: every shell script parses"
"""

_REPO_MICROAGENT = """---
name: repo
type: repo
agent: CodeActAgent
---
This is the sample repository of the local stack (`make dev`).

- `.openhands/setup.sh` runs once after the clone and writes `.openhands_setup_done`.
- `.openhands/pre-commit.sh` runs before each commit: every shell script must parse.
- Branches: `main` (default) and `develop` (adds `CHANGELOG.md`).
"""

_BROKEN_SETUP_SCRIPT = """#!/bin/bash
# A setup script that fails, to see SETUP_SCRIPT_FAILED end to end.
echo "setup: installing the toolchain"
echo "setup: error: toolchain 9.9 is not available" >&2
exit 3
"""

SAMPLE_REPOSITORIES = (
    SampleRepository(
        name="repo",
        default_branch="main",
        commits=(
            SampleCommit(
                "main",
                "Sample project with an OpenHands setup script, pre-commit hook and microagent",
                (
                    SampleFile("README.md", "# repo\n\nThe local stack's sample repository.\n"),
                    SampleFile(".gitignore", f"{SETUP_MARKER}\n"),
                    SampleFile(".openhands/setup.sh", _SETUP_SCRIPT, executable=True),
                    SampleFile(".openhands/pre-commit.sh", _PRE_COMMIT_SCRIPT, executable=True),
                    SampleFile(".openhands/microagents/repo.md", _REPO_MICROAGENT),
                ),
            ),
            SampleCommit(
                "develop",
                "Start the changelog on develop",
                (SampleFile("CHANGELOG.md", "# Changelog\n\n## Unreleased\n\n- Work in progress on develop.\n"),),
            ),
        ),
    ),
    SampleRepository(
        name="broken-setup",
        default_branch="main",
        commits=(
            SampleCommit(
                "main",
                "A repository whose setup script fails with exit code 3",
                (
                    SampleFile("README.md", "# broken-setup\n\nIts setup script exits with status 3.\n"),
                    SampleFile(".openhands/setup.sh", _BROKEN_SETUP_SCRIPT, executable=True),
                ),
            ),
        ),
    ),
)


def _git_environment(home: Path) -> dict[str, str]:
    """Nothing from the user's git configuration: the sample repositories are the same everywhere."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "devstack",
        "GIT_AUTHOR_EMAIL": "devstack@localhost",
        "GIT_COMMITTER_NAME": "devstack",
        "GIT_COMMITTER_EMAIL": "devstack@localhost",
    }


def _git(env: dict[str, str], cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return result.stdout.strip()


def create_repository(repos_dir: Path, owner: str, sample: SampleRepository, scratch: Path) -> dict[str, str]:
    """Build `sample` with real git commands and publish it bare at `<repos_dir>/<owner>/<name>.git`.

    Returns branch -> commit sha.
    """
    work = scratch / f"{owner}-{sample.name}"
    env = _git_environment(scratch)
    work.mkdir(parents=True)
    _git(env, work, "init", "-q", "-b", sample.default_branch)
    branches: dict[str, str] = {}
    for commit in sample.commits:
        if commit.branch not in branches and branches:
            _git(env, work, "checkout", "-q", "-b", commit.branch)
        elif commit.branch in branches:
            _git(env, work, "checkout", "-q", commit.branch)
        for file in commit.files:
            target = work / file.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.text)
            target.chmod(0o755 if file.executable else 0o644)
        _git(env, work, "add", "-A")
        _git(env, work, "commit", "-q", "-m", commit.message)
        branches[commit.branch] = _git(env, work, "rev-parse", "HEAD")
    bare = repos_dir / owner / f"{sample.name}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    _git(env, scratch, "clone", "-q", "--bare", str(work), str(bare))
    _git(env, bare, "symbolic-ref", "HEAD", f"refs/heads/{sample.default_branch}")
    shutil.rmtree(work)
    return branches


def create_sample_repositories(repos_dir: Path) -> dict[str, dict[str, str]]:
    """Every sample repository, fresh: `{"user/repo": {"main": sha, "develop": sha}, ...}`."""
    scratch = repos_dir.parent / "repos-work"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        return {
            f"{SAMPLE_OWNER}/{sample.name}": create_repository(repos_dir, SAMPLE_OWNER, sample, scratch)
            for sample in SAMPLE_REPOSITORIES
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class RepositoryDirectoryBackend(FileSystemBackend):
    """URL path `/owner/name.git` (or `/owner/name`, as GitHub allows) -> `<root>/owner/name.git`."""

    def open_repository(self, path: str | bytes) -> BackendRepo:
        relative = (os.fsdecode(path) if isinstance(path, bytes) else path).strip("/")
        try:
            return super().open_repository(relative)
        except NotGitRepository:
            if relative.endswith(".git"):
                raise
            return super().open_repository(relative + ".git")


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class LocalGitServer:
    """Smart HTTP (`git-upload-pack`, `git-receive-pack`) on 127.0.0.1, in a thread."""

    def __init__(self, repos_dir: Path, port: int = 0) -> None:
        self.repos_dir = repos_dir
        app = make_wsgi_chain(RepositoryDirectoryBackend(str(repos_dir)))
        self._server = make_server(
            "127.0.0.1", port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
