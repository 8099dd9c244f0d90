"""The ``git`` CLI, bounded in time, with credentials that never touch argv, URLs or disk config."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from openhands_sandbox.errors import ErrorCode, SandboxFailure
from openhands_sandbox.lifecycle import StopController
from openhands_sandbox.processes import BoundedResult, run_bounded

USERNAME_VARIABLE = "OPENHANDS_SANDBOX_GIT_USERNAME"
PASSWORD_VARIABLE = "OPENHANDS_SANDBOX_GIT_PASSWORD"  # noqa: S105 - a variable name
DEFAULT_USERNAME = "x-access-token"

ASKPASS_SCRIPT = f"""#!/bin/sh
# Answers git's credential prompts from the environment of the git process.
case "$1" in
  Username*) printf '%s\\n' "${USERNAME_VARIABLE}" ;;
  *) printf '%s\\n' "${PASSWORD_VARIABLE}" ;;
esac
"""

AUTH_FAILURE_PATTERNS = (
    re.compile(r"authentication failed", re.IGNORECASE),
    re.compile(r"could not read (username|password)", re.IGNORECASE),
    re.compile(r"terminal prompts disabled", re.IGNORECASE),
    re.compile(r"returned error: 40[13]\b"),
    re.compile(r"\bHTTP 40[13]\b"),
    re.compile(r"permission denied \(publickey", re.IGNORECASE),
    re.compile(r"invalid username or (password|token)", re.IGNORECASE),
)
MISSING_REF_PATTERNS = (
    re.compile(r"couldn't find remote ref", re.IGNORECASE),
    re.compile(r"not our ref", re.IGNORECASE),
    re.compile(r"unadvertised object", re.IGNORECASE),
    re.compile(r"no such remote ref", re.IGNORECASE),
)


@dataclass(frozen=True)
class GitCredentials:
    username: str
    password: str = field(repr=False)


def looks_like_auth_failure(output: str) -> bool:
    return any(pattern.search(output) for pattern in AUTH_FAILURE_PATTERNS)


def looks_like_missing_ref(output: str) -> bool:
    return any(pattern.search(output) for pattern in MISSING_REF_PATTERNS)


class Git:
    """Runs ``git`` commands with a timeout each, a clean environment and no prompts."""

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        timeout_seconds: float,
        stop: StopController,
    ) -> None:
        self._env = {**env, "GIT_TERMINAL_PROMPT": "0"}
        self._timeout_seconds = timeout_seconds
        self._stop = stop

    def run(self, args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> BoundedResult:
        return run_bounded(
            ["git", *args],
            cwd=cwd,
            env={**self._env, **(env or {})},
            timeout_seconds=self._timeout_seconds,
            stop=self._stop,
        )

    def check(self, args: Sequence[str], *, cwd: Path, code: ErrorCode, message: str) -> str:
        """Run and return the output; on failure raise ``SandboxFailure(code, message)``."""
        result = self.run(args, cwd=cwd)
        if result.returncode != 0 or result.timed_out:
            raise SandboxFailure(code, message, git_failure_details(args, result))
        return result.output

    def output_of(self, args: Sequence[str], *, cwd: Path) -> str | None:
        """Stripped output of a query command, or None if it fails."""
        result = self.run(args, cwd=cwd)
        if result.returncode != 0 or result.timed_out:
            return None
        return result.output.strip()


def git_failure_details(args: Sequence[str], result: BoundedResult) -> dict[str, object]:
    return {
        "command": "git " + " ".join(args),
        "exit_code": result.returncode,
        "timed_out": result.timed_out,
        "output_tail": result.output[-4096:],
    }


@contextmanager
def credential_environment(credentials: GitCredentials | None, scratch_dir: Path) -> Iterator[dict[str, str]]:
    """Environment additions that let git authenticate, valid inside the ``with`` block.

    The password travels in an environment variable of the git process only; a tiny
    ``GIT_ASKPASS`` script (which holds no secret) prints it when git asks. The script is
    deleted when the block ends.
    """
    if credentials is None:
        yield {}
        return
    script = scratch_dir / "git-askpass.sh"
    script.write_text(ASKPASS_SCRIPT)
    script.chmod(stat.S_IRWXU)
    try:
        yield {
            "GIT_ASKPASS": str(script),
            USERNAME_VARIABLE: credentials.username,
            PASSWORD_VARIABLE: credentials.password,
        }
    finally:
        script.unlink(missing_ok=True)
