"""`python -m devstack --sandbox-image`: a conversation on the local stack, its sandbox a container
of the built image (one agent-server boot), stopped and cleaned up as ECS would."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from openhands_sandbox.bootstrap import ExitCode

from devstack.fargate import container_entrypoint, kill_marked_processes, marked_processes
from tests.e2e.local_stack import RunningStack, agent_server_pid, environment_variable, free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.agent_server]

BOOT_TIMEOUT = 120
RUNNING_TIMEOUT = 240


def containers() -> set[str]:
    listed = subprocess.run(
        ["buildah", "containers", "--format", "{{.ContainerName}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return set(listed.stdout.split())


def sandbox_task(state_dir: Path, conversation_id: str) -> dict[str, Any]:
    for task_file in (state_dir / "sandboxes").glob("*/task.json"):
        task = json.loads(task_file.read_text())
        if task["conversation_id"] == conversation_id:
            return dict(task)
    raise AssertionError(f"no sandbox was started for {conversation_id}")


def test_a_conversation_runs_in_a_sandbox_from_the_image(image: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    stack = RunningStack.start(state_dir, free_port(), arguments=("--sandbox-image", image))
    try:
        base_url = stack.wait_for_line(r"devstack ready: (http://127\.0\.0\.1:\d+)/api", BOOT_TIMEOUT).group(1)
        stack.wait_for_line(rf"sandboxes\s+from the image {image}", 1)
        response = requests.post(
            f"{base_url}/api/conversations", json={"repository": "https://github.com/user/repo.git"}, timeout=30
        )
        assert response.status_code == 200, response.text
        conversation_id = response.json()["conversation_id"]

        def finished() -> dict[str, Any] | None:
            view = requests.get(f"{base_url}/api/conversations/{conversation_id}", timeout=10).json()
            return view if view["conversation_status"] in {"RUNNING", "ERROR", "STOPPED"} else None

        view = wait_until(finished, RUNNING_TIMEOUT, "RUNNING")
        assert view["conversation_status"] == "RUNNING", (view, stack.output()[-4000:])
        assert view["runtime_status"] == "STATUS$READY"

        # The sandbox is the image's entrypoint in a buildah container, chrooted into its root.
        task = sandbox_task(state_dir, conversation_id)
        assert task["container"] in containers()
        marker = task["marker"].split("=", 1)[1]
        bootstrap = container_entrypoint(task["pid"], marker)
        assert bootstrap is not None
        command = Path(f"/proc/{bootstrap}/cmdline").read_bytes().split(b"\0")[:-1]
        assert command[-2:] == [b"-m", b"openhands_sandbox.bootstrap"] and b"-I" in command
        assert os.readlink(f"/proc/{bootstrap}/root") != "/"
        agent_server = agent_server_pid(int(view["agent_server_url"].rsplit(":", 1)[1]))
        assert agent_server is not None
        assert os.readlink(f"/proc/{agent_server}/root") == os.readlink(f"/proc/{bootstrap}/root")
        agent_uid = environment_variable(bootstrap, "SANDBOX_AGENT_UID")
        status = Path(f"/proc/{agent_server}/status").read_text()
        (uid_line,) = [line for line in status.splitlines() if line.startswith("Uid:")]
        assert uid_line.split()[1:] == [agent_uid] * 4
        # The sample repository's setup script ran in the task's workspace.
        assert (Path(task["workspace_root"]) / "repo" / ".openhands_setup_done").is_file()

        # Stop: SIGTERM to the entrypoint, the container's processes end, the container is removed.
        stopped = requests.post(f"{base_url}/api/conversations/{conversation_id}/stop", timeout=60)
        assert stopped.status_code == 200, stopped.text
        wait_until(lambda: not marked_processes(marker), 30, "the container's processes to end")
        wait_until(lambda: task["container"] not in containers(), 30, "the container to be removed")
        ended = wait_until(lambda: "exit_code" in (t := sandbox_task(state_dir, conversation_id)) and t, 10, "the end")
        # A stop revokes the sandbox's token and stops its task together: the bootstrap ends on
        # whichever reaches it first, SIGTERM (STOPPED) or a 401/409 from the control plane
        # (CONTROL_PLANE_GONE); both are its orderly shutdown, never FAILED or AGENT_SERVER_EXITED.
        assert ended["exit_code"] in {ExitCode.STOPPED, ExitCode.CONTROL_PLANE_GONE}, ended

        assert stack.interrupt(timeout=60) == 0
        assert not [name for name in containers() if name.startswith("devstack-") and marker.split(":")[0] in name]
    finally:
        stack.kill_everything()
        for task_file in (state_dir / "sandboxes").glob("*/task.json"):  # what a failed test leaves
            task = json.loads(task_file.read_text())
            kill_marked_processes(task["marker"].split("=", 1)[1])
            subprocess.run(["buildah", "rm", task["container"]], capture_output=True, check=False, timeout=60)
