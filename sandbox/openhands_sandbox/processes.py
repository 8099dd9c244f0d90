"""Child processes: clean environments, bounded runs, killing whole process groups."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from openhands_sandbox.lifecycle import StopController
from openhands_sandbox.users import RunAs

POLL_SECONDS = 0.1
SANDBOX_ONLY_VARIABLES = frozenset(
    {
        "SANDBOX_TOKEN",
        "SANDBOX_API_URL",
        "SANDBOX_POOL_TOKEN",
        "SANDBOX_POOL_ID",
        "SESSION_API_KEY",
        "OH_SESSION_API_KEYS_0",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
    }
)
"""Never handed to children: credentials, ways to reach them, or the bootstrap's own paths."""
SANDBOX_ONLY_PREFIXES = (
    "SANDBOX_",
    # The task role's credentials and the task metadata: the container credentials
    # endpoint (AWS_CONTAINER_CREDENTIALS_*), keys, regions, profiles.
    "AWS_",
    "ECS_CONTAINER_METADATA_URI",
)

AGENT_ENVIRONMENT = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        # The agent-server's own switches (the task definition sets them).
        "LITELLM_LOCAL_MODEL_COST_MAP",
        "OPENHANDS_SUPPRESS_BANNER",
    }
)
"""What of the task's environment the agent-server, and so the agent's terminal, gets: the
locale, the way out (proxies, CA bundles) and the server's own switches, plus the ``LC_*`` and the
names listed in ``SANDBOX_AGENT_ENVIRONMENT``. The sandbox's wiring (its port, uids, workspace
root, the image's build settings) stays with the bootstrap: the agent has no use for it, and the
terminal copies every variable into its tmux session with one tmux call each when a
conversation starts (3-7 ms apiece here, measured, on the path to RUNNING)."""
EXTRA_AGENT_ENVIRONMENT_VARIABLE = "SANDBOX_AGENT_ENVIRONMENT"


def agent_environment(secrets: Iterable[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``clean_environment`` narrowed to ``AGENT_ENVIRONMENT``, the ``LC_*`` and the names listed
    (comma-separated) in ``SANDBOX_AGENT_ENVIRONMENT``; nothing it drops can be listed back."""
    source = os.environ if base is None else base
    listed = {name.strip() for name in source.get(EXTRA_AGENT_ENVIRONMENT_VARIABLE, "").split(",") if name.strip()}
    return {
        name: value
        for name, value in clean_environment(secrets, source).items()
        if name in AGENT_ENVIRONMENT or name.startswith("LC_") or name in listed
    }


def clean_environment(secrets: Iterable[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: ``os.environ``) without sandbox credentials.

    Drops the variables in ``SANDBOX_ONLY_VARIABLES``, those starting with one of
    ``SANDBOX_ONLY_PREFIXES`` and any variable whose value contains one of ``secrets``.
    """
    source = os.environ if base is None else base
    secret_values = [secret for secret in secrets if secret]
    return {
        name: value
        for name, value in source.items()
        if name not in SANDBOX_ONLY_VARIABLES
        and not name.startswith(SANDBOX_ONLY_PREFIXES)
        and not any(secret in value for secret in secret_values)
    }


@dataclass(frozen=True)
class BoundedResult:
    returncode: int
    output: str
    """The tail of stdout and stderr interleaved."""
    timed_out: bool


def run_bounded(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_seconds: float,
    stop: StopController,
    output_limit: int = 64 * 1024,
    run_as: RunAs | None = None,
) -> BoundedResult:
    """Run ``argv`` in its own process group, killing the whole group on timeout or stop.

    Output goes to a temporary file, not a pipe, so a background grandchild that keeps
    the output open can never block us. A process that exits by itself keeps its
    background children (a setup script may start services on purpose; the caller ends
    them by uid when they must not outlive this step). ``run_as``: the child's identity.
    Raises ``StopRequested`` if a stop is requested while it runs.
    """
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **(run_as.popen_options() if run_as else {}),
        )
        try:
            outcome = _wait_for_exit(process, time.monotonic() + timeout_seconds, stop)
        finally:
            if process.poll() is None:
                kill_process_group(process)
        if outcome == "stopped":
            stop.raise_if_requested()
        return BoundedResult(
            returncode=process.returncode,
            output=read_tail(output, output_limit),
            timed_out=outcome == "timed_out",
        )


def _wait_for_exit(process: subprocess.Popen[bytes], deadline: float, stop: StopController) -> str:
    while True:
        if stop.requested:
            return "stopped"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timed_out"
        try:
            process.wait(timeout=min(POLL_SECONDS, remaining))
            return "exited"
        except subprocess.TimeoutExpired:
            continue


def read_tail(stream: IO[bytes], limit: int) -> str:
    """The last ``limit`` bytes of a seekable binary stream, decoded leniently."""
    stream.flush()
    size = stream.seek(0, os.SEEK_END)
    stream.seek(max(0, size - limit))
    return stream.read().decode("utf-8", errors="replace")


def read_file_tail(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as stream:
            return read_tail(stream, limit)
    except OSError:
        return ""


def kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the group led by ``process`` (started with ``start_new_session``) and reap it."""
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def terminate_process_group(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM the group, give it ``grace_seconds`` to exit, then SIGKILL what is left."""
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_seconds)
    # Members of the group other than the leader may still be alive.
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
