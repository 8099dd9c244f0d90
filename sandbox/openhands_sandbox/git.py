"""The ``git`` CLI, bounded in time, with credentials that never touch argv, URLs or disk config."""

from __future__ import annotations

import re
import shlex
import stat
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from openhands_sandbox.errors import ErrorCode, SandboxFailure
from openhands_sandbox.lifecycle import StopController
from openhands_sandbox.processes import BoundedResult, run_bounded
from openhands_sandbox.users import RunAs

USERNAME_VARIABLE = "OPENHANDS_SANDBOX_GIT_USERNAME"
PASSWORD_VARIABLE = "OPENHANDS_SANDBOX_GIT_PASSWORD"  # noqa: S105 - a variable name
DEFAULT_USERNAME = "x-access-token"

CREDENTIAL_HELPER_SCRIPT = """#!/bin/sh
# git credential helper: answers `get` from the environment of the git process, and only
# for the protocol and host (with port) of the clone URL. Holds no secret itself.
[ "$1" = get ] || exit 0
protocol=
host=
while IFS= read -r line; do
  case "$line" in
    protocol=*) protocol="${{line#protocol=}}" ;;
    host=*) host="${{line#host=}}" ;;
    "") break ;;
  esac
done
[ "$protocol" = {protocol} ] && [ "$host" = {host} ] || exit 0
printf 'username=%s\\npassword=%s\\n' "${username_variable}" "${password_variable}"
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
    """Runs ``git`` commands with a timeout each, a clean environment and no prompts.

    ``run_as``: the identity of every git process (None: the bootstrap's own). Once the
    setup script has run, the repository's ``.git/config`` is the repository's to write
    (``core.fsmonitor`` runs a command, for one): git in the workspace then runs as the
    agent user, never as root.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        timeout_seconds: float,
        stop: StopController,
        run_as: RunAs | None = None,
    ) -> None:
        self._env = {**env, "GIT_TERMINAL_PROMPT": "0"}
        self._timeout_seconds = timeout_seconds
        self._stop = stop
        self._run_as = run_as

    def run(self, args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> BoundedResult:
        return run_bounded(
            ["git", *args],
            cwd=cwd,
            env={**self._env, **(env or {})},
            timeout_seconds=self._timeout_seconds,
            stop=self._stop,
            run_as=self._run_as,
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


ISOLATED_CONFIG = {
    # Only the configuration we write: no system or global file can add a credential
    # helper, an `insteadOf` rewrite or a proxy.
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}
FETCH_OPTIONS = (
    # A redirect would send the credentials' next request to wherever the server says.
    "-c",
    "http.followRedirects=false",
    # Reset the helper list, so ours (added below) is the only one.
    "-c",
    "credential.helper=",
)


@dataclass(frozen=True)
class FetchAccess:
    """What a fetch from the origin adds to git: options before the command, environment."""

    options: tuple[str, ...]
    env: dict[str, str] = field(repr=False)


@contextmanager
def credential_environment(
    credentials: GitCredentials | None, clone_url: str, scratch_dir: Path
) -> Iterator[FetchAccess]:
    """Options and environment additions for an authenticated fetch, valid inside the block.

    The password travels in an environment variable of the git process only; a tiny
    credential helper (which holds no secret) prints it when git asks, and only for the
    clone URL's protocol and host:port. The script is deleted when the block ends.
    """
    if credentials is None:
        yield FetchAccess(FETCH_OPTIONS, dict(ISOLATED_CONFIG))
        return
    protocol, host = credential_target(clone_url)
    script = scratch_dir / "git-credential-helper.sh"
    script.write_text(
        CREDENTIAL_HELPER_SCRIPT.format(
            protocol=shlex.quote(protocol),
            host=shlex.quote(host),
            username_variable=USERNAME_VARIABLE,
            password_variable=PASSWORD_VARIABLE,
        )
    )
    script.chmod(stat.S_IRWXU)
    try:
        yield FetchAccess(
            (*FETCH_OPTIONS, "-c", f"credential.helper=!{shlex.quote(str(script))}"),
            {
                **ISOLATED_CONFIG,
                USERNAME_VARIABLE: credentials.username,
                PASSWORD_VARIABLE: credentials.password,
            },
        )
    finally:
        script.unlink(missing_ok=True)


def credential_target(clone_url: str) -> tuple[str, str]:
    """(protocol, host) as git describes the clone URL to a credential helper.

    The host keeps the port when the URL names one; without one, git asks for the bare host
    and the credentials go only to the scheme's default port.
    """
    parts = urllib.parse.urlsplit(clone_url)
    return parts.scheme, parts.netloc.rpartition("@")[2]
