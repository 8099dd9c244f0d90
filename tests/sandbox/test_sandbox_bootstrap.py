"""The bootstrap entrypoint, run as a process against a control-plane double and real git.

Most runs end with the control plane answering 409 to ``STATUS$STARTING_AGENT_SERVER``
(the conversation was stopped meanwhile): the bootstrap then stops right before starting
the agent-server, with the workspace left on disk to inspect. The real agent-server is
exercised in test_sandbox_agent_server.py.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sandbox_harness import (
    SAFE_DIRECTORIES,
    ControlPlaneDouble,
    Secrets,
    SourceRepo,
    bootstrap_environment,
    control_plane,
    git,
    git_daemon,
    git_http_server,
    log_lines,
    make_context,
    make_source_repo,
    process_is_alive,
    repository_context,
    run_bootstrap,
    start_bootstrap,
)

ALL_PHASES = [
    "STATUS$RUNTIME_STARTED",
    "STATUS$SETTING_UP_WORKSPACE",
    "STATUS$RUNNING_SETUP_SCRIPT",
    "STATUS$SETTING_UP_GIT_HOOKS",
    "STATUS$STARTING_AGENT_SERVER",
]
EXIT_STOPPED, EXIT_FAILED, EXIT_CONTROL_PLANE_GONE = 0, 1, 2
STARTING_AGENT_SERVER = "STATUS$STARTING_AGENT_SERVER"


class Sandbox:
    """One bootstrap run: its control plane, workspace root and output directory."""

    def __init__(
        self,
        tmp_path: Path,
        conversation_id: str,
        secrets: Secrets,
        plane: ControlPlaneDouble,
    ) -> None:
        self.plane = plane
        self.secrets = secrets
        self.workspace_root = tmp_path / "workspace"
        self.output_dir = tmp_path / "out"
        self.output_dir.mkdir()
        self.output_dir.chmod(0o777)  # the setup script writes here, as a user of its own
        self.env = bootstrap_environment(
            conversation_id=conversation_id,
            api_url=plane.url,
            token=secrets.token,
            workspace_root=self.workspace_root,
            scratch=tmp_path / "scratch",
            extra={"TEST_OUTPUT_DIR": str(self.output_dir)},
        )

    def run(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_bootstrap(self.env, timeout)

    def failed_event(self) -> dict[str, Any]:
        (failed,) = self.plane.of_type("failed")
        return failed


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, SourceRepo]:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    return served_dir, make_source_repo(served_dir)


def sandbox_for(tmp_path: Path, conversation_id: str, secrets: Secrets, plane: ControlPlaneDouble) -> Sandbox:
    plane.stop_at_phase = STARTING_AGENT_SERVER
    return Sandbox(tmp_path, conversation_id, secrets, plane)


def assert_no_secret_in(text: str, secrets: Secrets) -> None:
    for secret in secrets.all():
        assert secret not in text


# --- workspace ----------------------------------------------------------------------------


def test_clones_the_branch_at_the_recorded_commit_over_git_daemon(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
    served: tuple[Path, SourceRepo],
) -> None:
    served_dir, source = served
    with git_daemon(served_dir) as base_url:
        repository = repository_context(f"{base_url}/demo", source.commits["f1"], branch="feature")
        context = make_context(conversation_id, sandbox_secrets, repository=repository)
        with control_plane(sandbox_secrets.token, context) as plane:
            sandbox = sandbox_for(tmp_path, conversation_id, sandbox_secrets, plane)
            result = sandbox.run()

    assert result.returncode == EXIT_CONTROL_PLANE_GONE, result.stderr
    assert plane.phases() == ALL_PHASES
    assert plane.of_type("failed") == []
    repo_dir = sandbox.workspace_root / "demo"
    assert git("rev-parse", "HEAD", cwd=repo_dir) == source.commits["f1"]
    assert git("symbolic-ref", "--short", "HEAD", cwd=repo_dir) == "feature"
    assert git("rev-parse", "--is-shallow-repository", cwd=repo_dir) == "true"
    assert git("status", "--porcelain", cwd=repo_dir) == ""
    assert git("config", "branch.feature.merge", cwd=repo_dir) == "refs/heads/feature"
    assert (repo_dir / "feature.txt").read_text() == "one\n"


def test_falls_back_to_fetching_the_branch_when_the_server_refuses_a_commit(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
    served: tuple[Path, SourceRepo],
) -> None:
    """Git protocol v0 servers refuse unadvertised commits: the branch is fetched instead."""
    _, source = served
    repository = repository_context(f"file://{source.path}", source.commits["f1"], branch="feature")
    context = make_context(conversation_id, sandbox_secrets, repository=repository)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = sandbox_for(tmp_path, conversation_id, sandbox_secrets, plane)
        sandbox.env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.version", "GIT_CONFIG_VALUE_0": "0"})
        result = sandbox.run()

    assert result.returncode == EXIT_CONTROL_PLANE_GONE, result.stderr
    assert "fetching the branch instead" in result.stderr
    repo_dir = sandbox.workspace_root / "demo"
    assert git("rev-parse", "HEAD", cwd=repo_dir) == source.commits["f1"]
    assert git("symbolic-ref", "--short", "HEAD", cwd=repo_dir) == "feature"


# The service names the default branch it checked *and* the workspace branch to create.
@pytest.mark.parametrize("checked_branch", [None, "main"])
def test_without_a_branch_creates_the_workspace_branch_at_the_commit(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
    served: tuple[Path, SourceRepo],
    checked_branch: str | None,
) -> None:
    _, source = served
    repository = repository_context(f"file://{source.path}", source.commits["m2"], branch=checked_branch)
    context = make_context(
        conversation_id, sandbox_secrets, repository=repository, workspace_branch="openhands-workspace-ab12cd"
    )
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = sandbox_for(tmp_path, conversation_id, sandbox_secrets, plane)
        result = sandbox.run()

    assert result.returncode == EXIT_CONTROL_PLANE_GONE, result.stderr
    repo_dir = sandbox.workspace_root / "demo"
    assert git("rev-parse", "HEAD", cwd=repo_dir) == source.commits["m2"]
    assert git("symbolic-ref", "--short", "HEAD", cwd=repo_dir) == "openhands-workspace-ab12cd"


def test_without_a_repository_inits_an_empty_workspace(
    tmp_path: Path, conversation_id: str, sandbox_secrets: Secrets
) -> None:
    context = make_context(conversation_id, sandbox_secrets, repository=None)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = sandbox_for(tmp_path, conversation_id, sandbox_secrets, plane)
        result = sandbox.run()

    assert result.returncode == EXIT_CONTROL_PLANE_GONE, result.stderr
    assert plane.phases() == ALL_PHASES
    workspace = sandbox.workspace_root / "project"
    assert git("symbolic-ref", "--short", "HEAD", cwd=workspace) == "main"
    assert git("rev-parse", "--show-toplevel", cwd=workspace) == str(workspace)
    assert sorted(p.name for p in workspace.iterdir()) == [".git"]


def test_a_missing_commit_is_reported_as_ref_not_found(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
    served: tuple[Path, SourceRepo],
) -> None:
    served_dir, _ = served
    with git_daemon(served_dir) as base_url:
        repository = repository_context(f"{base_url}/demo", "1" * 40, branch="feature")
        context = make_context(conversation_id, sandbox_secrets, repository=repository)
        with control_plane(sandbox_secrets.token, context) as plane:
            sandbox = Sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
            result = sandbox.run()

    assert result.returncode == EXIT_FAILED, result.stderr
    assert plane.phases() == ALL_PHASES[:2]
    failed = sandbox.failed_event()
    assert failed["error_code"] == "REF_NOT_FOUND"
    assert "1" * 40 in failed["message"]


def test_a_missing_branch_is_reported_as_ref_not_found(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
    served: tuple[Path, SourceRepo],
) -> None:
    _, source = served
    repository = repository_context(f"file://{source.path}", "2" * 40, branch="no-such-branch")
    context = make_context(conversation_id, sandbox_secrets, repository=repository)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = Sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
        result = sandbox.run()

    assert result.returncode == EXIT_FAILED, result.stderr
    failed = sandbox.failed_event()
    assert failed["error_code"] == "REF_NOT_FOUND"
    assert "no-such-branch" in failed["message"]


def test_a_repository_that_does_not_exist_is_reported_as_clone_failed(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
    served: tuple[Path, SourceRepo],
) -> None:
    served_dir, source = served
    with git_daemon(served_dir) as base_url:
        repository = repository_context(f"{base_url}/missing", source.commits["m1"], branch="main")
        context = make_context(conversation_id, sandbox_secrets, repository=repository)
        with control_plane(sandbox_secrets.token, context) as plane:
            sandbox = Sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
            result = sandbox.run()

    assert result.returncode == EXIT_FAILED, result.stderr
    failed = sandbox.failed_event()
    assert failed["error_code"] == "CLONE_FAILED"
    assert "not exported" in failed["details"]["output_tail"]


# --- credentials --------------------------------------------------------------------------


@pytest.mark.parametrize("password_in", ["the password field", "the clone URL"])
def test_clones_over_authenticated_http_without_leaking_the_password(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
    served: tuple[Path, SourceRepo],
    password_in: str,
) -> None:
    served_dir, source = served
    with git_http_server(served_dir, "x-access-token", sandbox_secrets.git_password) as server:
        if password_in == "the password field":
            clone_url, password = f"{server.base_url}/demo", sandbox_secrets.git_password
        else:
            userinfo = f"x-access-token:{sandbox_secrets.git_password}@"
            clone_url, password = f"{server.base_url.replace('://', '://' + userinfo)}/demo", None
        repository = repository_context(clone_url, source.commits["f2"], branch="feature", password=password)
        context = make_context(conversation_id, sandbox_secrets, repository=repository)
        with control_plane(sandbox_secrets.token, context) as plane:
            sandbox = sandbox_for(tmp_path, conversation_id, sandbox_secrets, plane)
            result = sandbox.run()

    assert result.returncode == EXIT_CONTROL_PLANE_GONE, result.stderr
    assert server.expected_authorization in server.authorizations
    repo_dir = sandbox.workspace_root / "demo"
    assert git("rev-parse", "HEAD", cwd=repo_dir) == source.commits["f2"]
    assert git("remote", "get-url", "origin", cwd=repo_dir) == f"{server.base_url}/demo"
    assert_no_secret_in((repo_dir / ".git" / "config").read_text(), sandbox_secrets)
    assert_no_secret_in(result.stderr, sandbox_secrets)
    assert list((tmp_path / "scratch" / "tmp").rglob("git-askpass.sh")) == []
    assert not (tmp_path / "scratch" / "home" / ".git-credentials").exists()


def test_a_rejected_password_is_reported_as_repo_auth_failed(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
    served: tuple[Path, SourceRepo],
) -> None:
    served_dir, source = served
    with git_http_server(served_dir, "x-access-token", "the-right-password") as server:
        repository = repository_context(
            f"{server.base_url}/demo", source.commits["m1"], branch="main", password=sandbox_secrets.git_password
        )
        context = make_context(conversation_id, sandbox_secrets, repository=repository)
        with control_plane(sandbox_secrets.token, context) as plane:
            sandbox = Sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
            result = sandbox.run()

    assert result.returncode == EXIT_FAILED, result.stderr
    failed = sandbox.failed_event()
    assert failed["error_code"] == "REPO_AUTH_FAILED"
    assert_no_secret_in(result.stderr, sandbox_secrets)
    assert_no_secret_in(str(failed), sandbox_secrets)


# --- setup script -------------------------------------------------------------------------

SETUP_RECORDING_ENVIRONMENT = """\
pwd > "$TEST_OUTPUT_DIR/setup-cwd"
env > "$TEST_OUTPUT_DIR/setup-env"
sleep 1
touch setup-marker
echo "setup done"
"""


def test_setup_script_runs_in_the_repo_with_a_clean_environment(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    source = make_source_repo(served_dir, feature_files={".openhands/setup.sh": SETUP_RECORDING_ENVIRONMENT})
    with git_http_server(served_dir, "x-access-token", sandbox_secrets.git_password) as server:
        repository = repository_context(
            f"{server.base_url}/demo", source.commits["f1"], branch="feature", password=sandbox_secrets.git_password
        )
        context = make_context(conversation_id, sandbox_secrets, repository=repository)
        with control_plane(sandbox_secrets.token, context) as plane:
            sandbox = sandbox_for(tmp_path, conversation_id, sandbox_secrets, plane)
            result = sandbox.run()

    assert result.returncode == EXIT_CONTROL_PLANE_GONE, result.stderr
    repo_dir = sandbox.workspace_root / "demo"
    assert (repo_dir / "setup-marker").is_file()
    assert (sandbox.output_dir / "setup-cwd").read_text().strip() == str(repo_dir)
    setup_env = (sandbox.output_dir / "setup-env").read_text()
    assert "SANDBOX_TOKEN" not in setup_env
    assert "TEST_OUTPUT_DIR=" in setup_env  # the rest of the environment is passed on
    assert_no_secret_in(setup_env, sandbox_secrets)
    assert_no_secret_in(result.stderr, sandbox_secrets)
    # The setup script took a second: heartbeats (every 0.2 s) went on meanwhile.
    assert len(plane.of_type("heartbeat")) >= 2
    assert all(line["conversation_id"] == conversation_id for line in log_lines(result.stderr))


def test_a_failing_setup_script_reports_its_exit_code_and_output_tail(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    script = 'for i in $(seq 1 500); do echo "line $i of noise"; done\necho "boom" >&2\nexit 3\n'
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    source = make_source_repo(served_dir, feature_files={".openhands/setup.sh": script})
    repository = repository_context(f"file://{source.path}", source.commits["f1"], branch="feature")
    context = make_context(conversation_id, sandbox_secrets, repository=repository)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = Sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
        result = sandbox.run()

    assert result.returncode == EXIT_FAILED, result.stderr
    assert plane.phases() == ALL_PHASES[:3]
    failed = sandbox.failed_event()
    assert failed["error_code"] == "SETUP_SCRIPT_FAILED"
    assert failed["details"]["exit_code"] == 3
    assert failed["details"]["timed_out"] is False
    tail = failed["details"]["output_tail"]
    assert tail.endswith("line 500 of noise\nboom\n")
    assert 3000 < len(tail.encode()) <= 4096
    assert "status 3" in failed["message"]


HANGING_SETUP = """\
sleep 300 &
echo $! > "$TEST_OUTPUT_DIR/background.pid"
echo $$ > "$TEST_OUTPUT_DIR/script.pid"
echo "waiting forever"
sleep 300
"""


def test_a_hanging_setup_script_is_killed_with_its_whole_process_tree(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    source = make_source_repo(served_dir, feature_files={".openhands/setup.sh": HANGING_SETUP})
    repository = repository_context(f"file://{source.path}", source.commits["f1"], branch="feature")
    context = make_context(conversation_id, sandbox_secrets, repository=repository, setup_script_timeout_seconds=1)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = Sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
        started = time.monotonic()
        result = sandbox.run(timeout=30)
        elapsed = time.monotonic() - started

    assert result.returncode == EXIT_FAILED, result.stderr
    assert elapsed < 15
    failed = sandbox.failed_event()
    assert failed["error_code"] == "SETUP_SCRIPT_FAILED"
    assert failed["details"]["timed_out"] is True
    assert "1 second" in failed["message"]
    assert "waiting forever" in failed["details"]["output_tail"]
    for pid_file in ("script.pid", "background.pid"):
        pid = int((sandbox.output_dir / pid_file).read_text())
        assert not process_is_alive(pid), pid_file


# --- git hooks ----------------------------------------------------------------------------


def test_pre_commit_hook_keeps_the_existing_hook_and_runs_both(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    # An existing hook, installed by `git init` from a template directory.
    template = tmp_path / "template"
    (template / "hooks").mkdir(parents=True)
    existing_hook = template / "hooks" / "pre-commit"
    existing_hook.write_text('#!/bin/sh\necho local >> "$TEST_OUTPUT_DIR/hooks-ran"\n')
    existing_hook.chmod(0o755)
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    source = make_source_repo(
        served_dir,
        feature_files={
            ".openhands/pre-commit.sh": 'echo openhands >> "$TEST_OUTPUT_DIR/hooks-ran"\n',
        },
    )
    repository = repository_context(f"file://{source.path}", source.commits["f1"], branch="feature")
    context = make_context(conversation_id, sandbox_secrets, repository=repository)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = sandbox_for(tmp_path, conversation_id, sandbox_secrets, plane)
        sandbox.env["GIT_TEMPLATE_DIR"] = str(template)
        result = sandbox.run()

    assert result.returncode == EXIT_CONTROL_PLANE_GONE, result.stderr
    repo_dir = sandbox.workspace_root / "demo"
    hooks = repo_dir / ".git" / "hooks"
    assert os.access(hooks / "pre-commit", os.X_OK)
    assert os.access(hooks / "pre-commit.local", os.X_OK)
    assert "echo local" in (hooks / "pre-commit.local").read_text()

    (repo_dir / "change.txt").write_text("change\n")
    git("add", "change.txt", cwd=repo_dir)
    git("commit", "-q", "-m", "a change made by the agent", cwd=repo_dir, env=sandbox.env)

    assert (sandbox.output_dir / "hooks-ran").read_text() == "local\nopenhands\n"
    assert git("log", "-1", "--format=%an <%ae>", cwd=repo_dir, env=sandbox.env) == (
        "openhands <openhands@all-hands.dev>"
    )


def test_a_failing_openhands_pre_commit_script_blocks_the_commit(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    source = make_source_repo(
        served_dir,
        feature_files={
            ".openhands/pre-commit.sh": 'echo "lint failed" >&2\nexit 1\n',
        },
    )
    repository = repository_context(f"file://{source.path}", source.commits["f1"], branch="feature")
    context = make_context(conversation_id, sandbox_secrets, repository=repository)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = sandbox_for(tmp_path, conversation_id, sandbox_secrets, plane)
        result = sandbox.run()

    assert result.returncode == EXIT_CONTROL_PLANE_GONE, result.stderr
    repo_dir = sandbox.workspace_root / "demo"
    commit = subprocess.run(
        ["git", *SAFE_DIRECTORIES, "commit", "-q", "--allow-empty", "-m", "blocked"],
        cwd=repo_dir,
        env=sandbox.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert commit.returncode != 0
    assert "lint failed" in commit.stderr
    assert git("rev-parse", "HEAD", cwd=repo_dir) == source.commits["f1"]


# --- stopping -----------------------------------------------------------------------------

SLOW_SETUP = 'echo $$ > "$TEST_OUTPUT_DIR/script.pid"\nsleep 300\n'


def start_slow_setup_sandbox(
    tmp_path: Path,
    conversation_id: str,
    secrets: Secrets,
    plane: ControlPlaneDouble,
) -> tuple[Sandbox, subprocess.Popen[bytes]]:
    sandbox = Sandbox(tmp_path, conversation_id, secrets, plane)
    process = start_bootstrap(sandbox.env, tmp_path / "bootstrap.stderr")
    plane.wait_for(lambda e: e.get("phase") == "STATUS$RUNNING_SETUP_SCRIPT", timeout=20)
    pid_file = sandbox.output_dir / "script.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return sandbox, process


def slow_setup_context(tmp_path: Path, conversation_id: str, secrets: Secrets) -> dict[str, Any]:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    source = make_source_repo(served_dir, feature_files={".openhands/setup.sh": SLOW_SETUP})
    repository = repository_context(f"file://{source.path}", source.commits["f1"], branch="feature")
    return make_context(conversation_id, secrets, repository=repository)


def test_sigterm_while_working_stops_the_children_and_exits_zero(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    context = slow_setup_context(tmp_path, conversation_id, sandbox_secrets)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox, process = start_slow_setup_sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
        script_pid = int((sandbox.output_dir / "script.pid").read_text())
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=20)

    assert returncode == EXIT_STOPPED
    assert not process_is_alive(script_pid)
    assert plane.of_type("failed") == []
    assert plane.phases() == ALL_PHASES[:3]


def test_a_409_heartbeat_answer_stops_everything(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    context = slow_setup_context(tmp_path, conversation_id, sandbox_secrets)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox, process = start_slow_setup_sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
        plane.reject_heartbeats = True
        script_pid = int((sandbox.output_dir / "script.pid").read_text())
        returncode = process.wait(timeout=20)

    assert returncode == EXIT_CONTROL_PLANE_GONE
    assert not process_is_alive(script_pid)
    assert plane.of_type("failed") == []


def test_a_wrong_token_stops_at_the_first_call(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    context = make_context(conversation_id, sandbox_secrets, repository=None)
    with control_plane("another-token", context) as plane:
        sandbox = Sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
        result = sandbox.run()

    assert result.returncode == EXIT_CONTROL_PLANE_GONE
    assert plane.events == []
    assert not sandbox.workspace_root.exists()
    assert_no_secret_in(result.stderr, sandbox_secrets)


# --- agent-server start failures ----------------------------------------------------------


def test_an_agent_server_that_dies_at_start_is_reported_as_runtime_unhealthy(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    """This Python has no agent-server installed: ``python -m openhands.agent_server`` exits."""
    assert importlib.util.find_spec("openhands") is None, "precondition: no agent-server here"
    context = make_context(conversation_id, sandbox_secrets, repository=None)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = Sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
        sandbox.env["AGENT_SERVER_PYTHON"] = sys.executable
        result = sandbox.run()

    assert result.returncode == EXIT_FAILED, result.stderr
    assert plane.phases() == ALL_PHASES
    failed = sandbox.failed_event()
    assert failed["error_code"] == "RUNTIME_UNHEALTHY"
    assert "No module named" in failed["details"]["log_tail"]


def test_a_malformed_context_is_reported_as_internal_and_touches_nothing(
    tmp_path: Path,
    conversation_id: str,
    sandbox_secrets: Secrets,
) -> None:
    repository = repository_context("https://example.invalid/o/r.git", "a" * 40, branch="main", name="../escape")
    context = make_context(conversation_id, sandbox_secrets, repository=repository)
    with control_plane(sandbox_secrets.token, context) as plane:
        sandbox = Sandbox(tmp_path, conversation_id, sandbox_secrets, plane)
        result = sandbox.run()

    assert result.returncode == EXIT_FAILED, result.stderr
    assert plane.phases() == ALL_PHASES[:1]
    failed = sandbox.failed_event()
    assert failed["error_code"] == "INTERNAL"
    assert "repository.name" in failed["message"]
    assert not sandbox.workspace_root.exists()
    assert not (tmp_path / "escape").exists()
