"""The hostile repository of tests/sandbox/test_sandbox_hostile.py against the built image, as
Fargate runs it (two agent-server boots: the setup script holds the port of the one that boots
while it runs, and the bootstrap starts it again once the setup user is gone): the image's
entrypoint as root in its own root directory, the setup script as oh-setup (1001), the
agent-server as openhands (1000), the image's own venv, real random secrets and AWS-style task
credentials in the task environment.

The container runs with `buildah run --isolation chroot` through `devstack.sandbox_image` (the
code `make dev --sandbox-image` uses). The control plane and the git server are on this
machine's loopback (chroot isolation shares the network); the attacker's output directory is
mounted at /attack-output.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openhands_sandbox.users import processes_of
from sandbox_harness import (
    Secrets,
    control_plane,
    free_port,
    git_http_server,
    log_lines,
    make_context,
    make_source_repo,
    process_is_alive,
    repository_context,
)
from test_sandbox_hostile import (
    HOSTILE_REPOSITORY,
    assert_no_secret,
    everything_in,
    output_directory,
    task_secrets,
)

from devstack import sandbox_image
from devstack.fargate import container_entrypoint, kill_marked_processes, marked_processes
from tests.image.test_sandbox_image import AGENT_UID, ENTRYPOINT, SETUP_UID, VENV_PYTHON

pytestmark = pytest.mark.agent_server

READY_TIMEOUT = 180
OUTPUT_IN_CONTAINER = "/attack-output"
VICTIM_IN_CONTAINER = "/opt/openhands-sandbox/requirements.txt"  # root's, in the image


@dataclass
class ImageSandbox:
    out: Path
    workspace_root: Path
    log_path: Path
    secret_values: list[str]
    port: int
    marker: str
    process: subprocess.Popen[bytes]
    ready: dict[str, Any]
    bootstrap: int
    root: str
    """The container's root directory (/proc/<bootstrap>/root, in buildah's mount namespace)."""

    def log(self, message: str) -> dict[str, Any]:
        (line,) = [line for line in log_lines(self.log_path.read_text()) if line["message"] == message]
        return line

    @property
    def agent_server_pids(self) -> list[int]:
        """Every agent-server the bootstrap started, in order (the last serves the conversation)."""
        lines = log_lines(self.log_path.read_text())
        return [int(line["pid"]) for line in lines if line["message"] == "agent-server started"]

    @property
    def agent_server_pid(self) -> int:
        return self.agent_server_pids[-1]

    def stop(self) -> int:
        """SIGTERM to the container's entrypoint, as ECS stops a task; its exit code."""
        if self.process.poll() is None and (entrypoint := container_entrypoint(self.process.pid, self.marker)):
            os.kill(entrypoint, signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def in_image(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageSandbox]:
    base = tmp_path_factory.mktemp("image-hostile")
    out = output_directory(base / "out")
    served = base / "served"
    served.mkdir()
    source = make_source_repo(served, feature_files=HOSTILE_REPOSITORY)
    workspace_root = base / "workspace"
    workspace_root.mkdir()
    values = Secrets.random()
    aws = task_secrets()
    conversation_id = secrets.token_hex(16)
    port = free_port()
    marker = f"image-test-{conversation_id[:12]}"
    container = sandbox_image.SandboxContainer.create(image, marker)
    log_path = base / "bootstrap.log"
    with git_http_server(served, "x-access-token", values.git_password) as git_server:
        repository = repository_context(
            f"{git_server.base_url}/demo", source.commits["f1"], branch="feature", password=values.git_password
        )
        context = make_context(conversation_id, values, repository=repository)
        with control_plane(values.token, context) as plane, log_path.open("wb") as log_file:
            process = container.start(
                {
                    "CONVERSATION_ID": conversation_id,
                    "SANDBOX_API_URL": plane.url,
                    "SANDBOX_TOKEN": values.token,
                    "AGENT_SERVER_HOST": "127.0.0.1",
                    "AGENT_SERVER_PORT": str(port),
                    "AGENT_SERVER_PYTHON": VENV_PYTHON,  # the image's default, named for the attacker
                    "HEARTBEAT_SECONDS": "1",
                    "TEST_OUTPUT_DIR": OUTPUT_IN_CONTAINER,
                    "TEST_VICTIM": VICTIM_IN_CONTAINER,
                    **aws,
                },
                public_environment={"DEVSTACK_SANDBOX": marker},
                mounts={workspace_root: "/workspace", out: OUTPUT_IN_CONTAINER},
                private_dir=base / "private",
                log_file=log_file,
            )
            sandbox: ImageSandbox | None = None
            try:
                ready = plane.wait_for(lambda event: event["type"] in {"ready", "failed"}, READY_TIMEOUT)
                bootstrap = container_entrypoint(process.pid, marker) or 0
                root = os.readlink(f"/proc/{bootstrap}/root") if bootstrap else ""
                secret_values = [
                    *values.all(),
                    *aws.values(),
                    *([ready["session_api_key"]] if "session_api_key" in ready else []),
                ]
                sandbox = ImageSandbox(
                    out, workspace_root, log_path, secret_values, port, marker, process, ready, bootstrap, root
                )
                yield sandbox
            finally:
                if sandbox is not None:
                    sandbox.stop()
                elif process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                kill_marked_processes(marker)  # whatever the outcome, as a container's end would
                container.remove()


def test_the_hostile_repository_reaches_ready_in_the_image(in_image: ImageSandbox) -> None:
    assert in_image.ready["type"] == "ready", (in_image.ready, in_image.log_path.read_text()[-4000:])
    assert in_image.ready["workspace_dir"] == "/workspace/demo"
    assert in_image.ready["agent_server_url"] == f"http://127.0.0.1:{in_image.port}"


def test_the_entrypoint_is_the_images_own_as_root_in_its_own_root(in_image: ImageSandbox) -> None:
    status = Path(f"/proc/{in_image.bootstrap}/status").read_text()
    assert status.split("Uid:")[1].split()[:4] == ["0"] * 4
    command = Path(f"/proc/{in_image.bootstrap}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [part.decode() for part in command] == ENTRYPOINT
    assert in_image.root not in {"", "/"}


def test_the_setup_script_ran_as_the_setup_user_and_found_no_secret(in_image: ImageSandbox) -> None:
    out = in_image.out
    assert int((out / "setup-uid").read_text()) == SETUP_UID
    harvested = (out / "setup-proc.txt").read_text(errors="replace")
    assert f"== {in_image.bootstrap} " in harvested  # it looked at the bootstrap
    environment = (out / "setup-env.txt").read_text()
    assert "AWS_" not in environment and "ECS_CONTAINER_METADATA_URI" not in environment
    assert "SANDBOX_TOKEN" not in environment
    assert_no_secret(
        harvested + environment + (out / "setup-files.txt").read_text(errors="replace"), in_image.secret_values
    )


def test_its_daemon_was_gone_before_the_agent_server_got_the_conversation(in_image: ImageSandbox) -> None:
    """It held the port while the first agent-server booted: that one gave up, the second served."""
    out = in_image.out
    assert (out / "daemon-listening").read_text() == str(in_image.port)  # the attack was real
    assert (out / "outlasted").read_text().startswith("exited"), (out / "outlasted").read_text()
    assert not process_is_alive(int((out / "daemon.pid").read_text()))
    assert not (out / "listener.txt").exists(), "the conversation request went to the daemon"
    first, serving = in_image.agent_server_pids
    assert first != serving and not process_is_alive(first)


def test_the_agent_server_is_the_agent_user_isolated_from_the_repository(in_image: ImageSandbox) -> None:
    pid = in_image.agent_server_pid
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert command[:5] == [VENV_PYTHON.encode(), b"-I", b"-u", b"-m", b"openhands.agent_server"]
    assert Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4] == [str(AGENT_UID)] * 4
    assert not os.readlink(f"/proc/{pid}/cwd").startswith("/workspace")
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"LITELLM_LOCAL_MODEL_COST_MAP=True" in environment  # the image's: no fetch at boot
    assert b"OPENHANDS_SUPPRESS_BANNER=1" in environment
    assert not [variable for variable in environment if variable.startswith((b"SANDBOX_TOKEN", b"AWS_"))]
    assert not (in_image.out / "fake-agent-server-ran").exists()
    assert not list(in_image.out.glob("sitecustomize-ran-*"))


def test_no_planted_pth_file_runs_in_the_agent_server(in_image: ImageSandbox) -> None:
    planted = (in_image.out / "pth-planted.txt").read_text()
    assert f"refused {os.path.dirname(os.path.dirname(VENV_PYTHON))}/lib/python3.13/site-packages" in planted
    for ran in in_image.out.glob("pth-ran-*"):
        content = ran.read_bytes().decode(errors="replace")
        assert "openhands.agent_server" not in content, ran.name
        assert_no_secret(content, in_image.secret_values)


def test_the_hand_over_of_the_workspace_does_not_follow_links(in_image: ImageSandbox) -> None:
    link = in_image.workspace_root / "demo" / "victim-link"
    assert os.readlink(link) == VICTIM_IN_CONTAINER
    assert os.lstat(link).st_uid == AGENT_UID
    assert Path(f"/proc/{in_image.bootstrap}/root{VICTIM_IN_CONTAINER}").stat().st_uid == 0
    assert (in_image.workspace_root / "demo").stat().st_uid == AGENT_UID


def test_stopped_it_leaves_no_process_and_no_secret_anywhere(in_image: ImageSandbox) -> None:
    """Last of the module: SIGTERM to the entrypoint, as ECS stops a task."""
    agent_server = in_image.agent_server_pid
    assert in_image.stop() == 0, in_image.log_path.read_text()[-4000:]
    assert not process_is_alive(agent_server)
    deadline = time.monotonic() + 10
    while marked_processes(in_image.marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked_processes(in_image.marker) == []
    assert processes_of(SETUP_UID) == [] and processes_of(AGENT_UID) == []
    assert_no_secret(everything_in(in_image.out), in_image.secret_values)
    assert_no_secret(in_image.log_path.read_text(), in_image.secret_values)
