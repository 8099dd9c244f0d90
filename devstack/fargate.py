"""A local stand-in for ECS Fargate: each RUNNING task on the sandbox cluster becomes a local
sandbox process (`python -m openhands_sandbox.bootstrap`), as the task definition would run it.

- The process gets what the container would: the task definition's environment and the task's
  container overrides (CONVERSATION_ID, SANDBOX_API_URL, SANDBOX_TOKEN_CIPHERTEXT), with the local
  differences (workspace directory, loopback address, free port, the agent-server's Python).
  Nothing else of this process's environment: no AWS credentials, no LLM key, no user HOME.
- The task's role, as ECS gives it: a container credentials endpoint of its own
  (devstack/task_credentials.py, moto's test credentials) and moto's KMS endpoint, with which
  the bootstrap opens its sealed token (AWS_CONTAINER_CREDENTIALS_FULL_URI,
  AWS_CONTAINER_AUTHORIZATION_TOKEN, AWS_ENDPOINT_URL_KMS, AWS_REGION, AWS_DEFAULT_REGION).
- `StopTask` (desiredStatus STOPPED) sends SIGTERM to the process group, then SIGKILL after a
  grace period, as ECS does; a process that exits by itself stops its task (`ecs.stop_task`).
- Run as root, every sandbox is separated as on Fargate: its own pair of uids (setup user, agent
  user; `sandbox_users.py`), its private directories under the task's directory, and a
  filesystem view (`sandbox_view.py`) in which directories those uids cannot pass through
  (root's home with pyenv's Python, a 0700 temporary directory) show only what the sandbox needs.
  Not run as root: one warning, and the sandbox runs as this user with no separation.
- When a task ends, every process it started ends too, as a container's do: processes that left
  the process group (the agent-server's own session, tmux servers, a setup script's daemons) are
  found by a marker variable in their environment, and by the task's uids, and killed.
- Then ECS's "ECS Task State Change" event (lastStatus STOPPED, the container's exit code) goes
  to `on_task_stopped`, as EventBridge delivers it to the rules on the default bus.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from openhands_sandbox.processes import EXTRA_AGENT_ENVIRONMENT_VARIABLE
from openhands_sandbox.warm import IDLE_NICENESS_VARIABLE, POOL_ID_VARIABLE

from devstack import SANDBOX_PACKAGE_DIR
from devstack.console import say, short
from devstack.moto_wakes import stop_waking, wake_after_calls
from devstack.sandbox_image import SandboxContainer
from devstack.sandbox_users import UidPair, allocate_uid_pair
from devstack.sandbox_view import python_installation, view_command
from devstack.task_credentials import TaskCredentialsServer
from devstack.template_resources import ACCOUNT_ID, REGION, ROOT

AGENT_PYTHON = ROOT / ".venv-agent" / "bin" / "python"
MARKER_VARIABLE = "DEVSTACK_SANDBOX"
IDLE_POOL_NICENESS = 19
STOP_GRACE_SECONDS = 20.0  # the bootstrap itself gives the agent-server 10 s
POLL_SECONDS = 0.25


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environ_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _is_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def marked_processes(marker: str, *, prefix: bool = False) -> list[int]:
    """Live processes whose environment holds `DEVSTACK_SANDBOX=<marker>` (or `<marker>...`)."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for variable in _environ_of(int(entry.name)).split(b"\0"):
            if variable == needle or (prefix and variable.startswith(needle)):
                if _is_alive(int(entry.name)):
                    found.append(int(entry.name))
                break
    return found


def kill_marked_processes(marker: str, *, prefix: bool = False) -> int:
    """SIGKILL every process carrying the marker, until none is left; returns how many."""
    killed = 0
    for _ in range(10):  # a process may fork while we look
        pids = marked_processes(marker, prefix=prefix)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.05)
    return killed


@dataclass
class SandboxTask:
    task_arn: str
    task_id: str
    conversation_id: str
    process: subprocess.Popen[bytes]
    marker: str
    directory: Path
    workspace_root: Path
    agent_server_port: int
    uids: UidPair | None = None
    container_name: str = "sandbox"
    started_by: str = ""
    task_definition_arn: str = ""
    group: str = ""
    created_at: str = ""
    container: str = ""
    """The buildah working container, when the sandbox runs from the image."""
    credentials_token: str = field(default="", repr=False)
    started_at: float = field(default_factory=time.monotonic)
    ending: bool = False
    ended: threading.Event = field(default_factory=threading.Event)

    def record(self, **extra: Any) -> None:
        """`<sandbox dir>/task.json`: where to find this sandbox's workspace, process and log."""
        info = {
            "task_arn": self.task_arn,
            "task_id": self.task_id,
            "conversation_id": self.conversation_id,
            "pid": self.process.pid,
            "agent_server_port": self.agent_server_port,
            "workspace_root": str(self.workspace_root),
            "log": str(self.directory / "bootstrap.log"),
            "marker": f"{MARKER_VARIABLE}={self.marker}",
            **({"container": self.container} if self.container else {}),
            **extra,
        }
        # Written whole or not at all: tests and tools read it while the task ends.
        staged = self.directory / "task.json.new"
        staged.write_text(json.dumps(info, indent=2) + "\n")
        staged.replace(self.directory / "task.json")


TaskStateListener = Callable[[dict[str, Any]], None]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def container_exit_code(returncode: int) -> int:
    """A container killed by a signal exits 128 + the signal's number (docker's convention)."""
    return 128 - returncode if returncode < 0 else returncode


def wake_on_task_changes(event: threading.Event) -> None:
    """Set ``event`` after every RunTask and StopTask moto's ECS answers: the local Fargate starts
    and stops processes when ECS is asked to, not at its next poll, as Fargate acts on the call."""
    from moto.ecs.models import EC2ContainerServiceBackend

    wake_after_calls(EC2ContainerServiceBackend, ("run_task", "stop_task"), event)


class LocalFargate:
    def __init__(
        self,
        ecs: Any,
        cluster_arn: str,
        state_dir: Path,
        *,
        agent_python: Path = AGENT_PYTHON,
        grace_seconds: float = STOP_GRACE_SECONDS,
        on_task_stopped: TaskStateListener | None = None,
        sandbox_image: str | None = None,
        task_credentials: TaskCredentialsServer | None = None,
        kms_endpoint_url: str = "",
    ) -> None:
        """`on_task_stopped` gets the "ECS Task State Change" event of each sandbox task that
        ends while the stack runs (not of those the stack's own shutdown ends).
        `sandbox_image`: run each sandbox from this image (buildah, chroot isolation) instead
        of as a local process."""
        self._sandbox_image = sandbox_image
        self._on_task_stopped = on_task_stopped
        self._task_credentials = task_credentials
        self._kms_endpoint_url = kms_endpoint_url
        self._ecs = ecs
        self._cluster = cluster_arn
        self._state_dir = state_dir
        self._agent_python = agent_python
        self._grace_seconds = grace_seconds
        self._run_id = uuid.uuid4().hex[:12]
        self._tasks: dict[str, SandboxTask] = {}
        self._seen: set[str] = set()
        self._definitions: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._nudged = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-fargate", daemon=True)
        self._enders: list[threading.Thread] = []
        self._separated = os.geteuid() == 0
        if not self._separated:
            say(
                "local fargate: not running as root, so sandboxes run as this user: their setup "
                "scripts and agent-servers are not separated from the bootstrap or from each other"
            )

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        wake_on_task_changes(self._nudged)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling, then every sandbox (in parallel) and whatever they left behind."""
        self._stopping.set()
        self._nudged.set()
        stop_waking(self._nudged)
        self._thread.join(timeout=10)
        with self._lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            self._end_in_background(task, "devstack is stopping", report=False)
        for ender in list(self._enders):
            ender.join(timeout=self._grace_seconds + 10)
        kill_marked_processes(f"{self._run_id}:", prefix=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            # A RunTask or StopTask wakes the loop at once (wake_on_task_changes); the poll also
            # notices processes that exited by themselves.
            self._nudged.wait(POLL_SECONDS)
            self._nudged.clear()
            if self._stopping.is_set():
                return
            try:
                self._poll_once()
            except Exception as error:
                if not self._stopping.is_set():
                    say(f"local fargate: polling ECS failed: {type(error).__name__}: {error}")

    def _poll_once(self) -> None:
        running = set(self._list_tasks("RUNNING"))
        for task_arn in sorted(running - self._seen):
            self._seen.add(task_arn)
            self._launch(task_arn)
        with self._lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            if task.ending:
                continue
            if task.task_arn not in running:
                self._end_in_background(task, self._stopped_reason(task.task_arn), report=False)
            elif task.process.poll() is not None:
                self._end_in_background(
                    task, f"Essential container in task exited (exit code {task.process.returncode})", report=True
                )

    def _list_tasks(self, desired_status: str) -> list[str]:
        arns: list[str] = []
        token: str | None = None
        while True:
            page = self._ecs.list_tasks(
                cluster=self._cluster, desiredStatus=desired_status, **({"nextToken": token} if token else {})
            )
            arns.extend(page.get("taskArns", []))
            token = page.get("nextToken")
            if not token:
                return arns

    def _stopped_reason(self, task_arn: str) -> str:
        tasks = self._ecs.describe_tasks(cluster=self._cluster, tasks=[task_arn]).get("tasks", [])
        return str(tasks[0].get("stoppedReason") or "StopTask") if tasks else "task is gone"

    # -- launching ---------------------------------------------------------------------------------
    def _launch(self, task_arn: str) -> None:
        described = self._ecs.describe_tasks(cluster=self._cluster, tasks=[task_arn]).get("tasks", [])
        if not described:
            return
        task = described[0]
        task_id = task_arn.rsplit("/", 1)[-1]
        definition = self._task_definition(task["taskDefinitionArn"])
        overrides = (task.get("overrides") or {}).get("containerOverrides") or []
        container = next(
            (item for item in definition["containerDefinitions"] if item.get("essential", True)),
            definition["containerDefinitions"][0],
        )
        override: dict[str, Any] = next((item for item in overrides if item.get("name") == container["name"]), {})
        task_environment = {item["name"]: item["value"] for item in container.get("environment", [])}
        task_environment.update({item["name"]: item["value"] for item in override.get("environment", [])})
        conversation_id = task_environment.get("CONVERSATION_ID") or task.get("startedBy") or task_id

        directory = self._state_dir / "sandboxes" / task_id
        workspace_root = self._state_dir / "workspaces" / task_id
        # Others (the sandbox's own users) may pass through, not list; the bootstrap's files are its own.
        for path, mode in ((directory, 0o711), (directory / "runtime", 0o711), (workspace_root, 0o711)):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
        for path in (directory / "home", directory / "tmp"):
            path.mkdir(mode=0o700, exist_ok=True)
        private_tmp = directory / "slash-tmp"  # its /tmp, as a container's own
        private_tmp.mkdir(exist_ok=True)
        private_tmp.chmod(0o1777)
        port = free_port()
        marker = f"{self._run_id}:{task_id}"
        uids = allocate_uid_pair() if self._separated else None
        # What differs from the Fargate task in both modes: the loopback address, a free port,
        # the sandbox's own pair of uids (two sandboxes on one machine share nothing).
        container_environment = {
            **task_environment,
            "AGENT_SERVER_HOST": "127.0.0.1",
            "AGENT_SERVER_PORT": str(port),
            **(uids.environment() if uids else {}),
            # The marker reaches the agent's processes too: what leaves its process group is
            # still found and killed when the task ends.
            EXTRA_AGENT_ENVIRONMENT_VARIABLE: MARKER_VARIABLE,
        }
        if self._separated and POOL_ID_VARIABLE in task_environment:
            # A Fargate task has its vCPUs to itself: here an idle pool sandbox's boot takes only
            # the CPU nobody else wants, and its bootstrap (root) takes normal priority back when
            # it is assigned (openhands_sandbox/warm.py).
            container_environment[IDLE_NICENESS_VARIABLE] = str(IDLE_POOL_NICENESS)
        # The task role, as ECS serves it: a credentials endpoint of its own, and moto's KMS.
        credentials_token = ""
        if self._task_credentials is not None:
            credentials_token = self._task_credentials.issue()
            container_environment.update(
                self._task_credentials.task_environment(credentials_token, self._kms_endpoint_url, REGION)
            )
        log_path = directory / "bootstrap.log"
        image_container: SandboxContainer | None = None
        with log_path.open("ab") as log_file:
            log_path.chmod(0o600)
            if self._sandbox_image is not None:
                name = f"devstack-{self._run_id}-{task_id[:12]}"
                image_container = SandboxContainer.create(self._sandbox_image, name)
                process = image_container.start(
                    container_environment,
                    public_environment={MARKER_VARIABLE: marker},
                    mounts={workspace_root: "/workspace"},
                    private_dir=directory / "private",
                    log_file=log_file,
                )
            else:
                process = self._start_process(
                    container_environment, directory, workspace_root, marker, private_tmp, log_file
                )
        sandbox = SandboxTask(
            task_arn,
            task_id,
            conversation_id,
            process,
            marker,
            directory,
            workspace_root,
            port,
            uids=uids,
            container_name=str(container["name"]),
            started_by=str(task.get("startedBy") or ""),
            task_definition_arn=str(task["taskDefinitionArn"]),
            group=str(task.get("group") or ""),
            created_at=_iso(task.get("createdAt")),
            container=image_container.name if image_container else "",
            credentials_token=credentials_token,
        )
        sandbox.record()
        with self._lock:
            self._tasks[task_arn] = sandbox
        where = f"container {image_container.name}" if image_container else f"pid {process.pid}"
        say(
            f"{short(conversation_id)} sandbox started: task {short(task_id)}, {where}, "
            f"agent-server port {port}, log {self._display(log_path)}"
        )

    def _start_process(
        self,
        container_environment: dict[str, str],
        directory: Path,
        workspace_root: Path,
        marker: str,
        private_tmp: Path,
        log_file: IO[bytes],
    ) -> subprocess.Popen[bytes]:
        """The bootstrap as a plain local process (the fast default), in its filesystem view."""
        environment = {
            # What a container has of its own; nothing of this process's environment beyond it.
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(directory / "home"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": str(directory / "tmp"),
            **container_environment,
            # Local differences from the Fargate task.
            "WORKSPACE_ROOT": str(workspace_root),
            "AGENT_SERVER_PYTHON": str(self._agent_python),
            "PYTHONPATH": str(SANDBOX_PACKAGE_DIR),
            "PYTHONUNBUFFERED": "1",
            # Offline: LiteLLM's bundled model cost map instead of fetching it from GitHub at start.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            # The private HOME/TMPDIR of its setup script and agent-server, removed when it stops.
            "SANDBOX_RUNTIME_DIR": str(directory / "runtime"),
            MARKER_VARIABLE: marker,
        }
        exposed = [
            directory,
            workspace_root,
            SANDBOX_PACKAGE_DIR,
            self._agent_python.parents[1],
            python_installation(self._agent_python),
        ]
        return subprocess.Popen(
            [
                *view_command(exposed, private_tmp if self._separated else None),
                str(self._agent_python),
                "-m",
                "openhands_sandbox.bootstrap",
            ],
            cwd=directory,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _task_definition(self, arn: str) -> dict[str, Any]:
        if arn not in self._definitions:
            self._definitions[arn] = self._ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        return self._definitions[arn]

    def _display(self, path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    # -- ending --------------------------------------------------------------------------------------
    def _end_in_background(self, task: SandboxTask, reason: str, *, report: bool) -> None:
        with self._lock:
            if task.ending:
                return
            task.ending = True
        ender = threading.Thread(target=self._end, args=(task, reason, report), name=f"end-{task.task_id[:8]}")
        self._enders.append(ender)
        ender.start()

    def _end(self, task: SandboxTask, reason: str, report: bool) -> None:
        """SIGTERM, grace, SIGKILL (the group, then every marked process); then tell ECS if asked."""
        exited_by_itself = task.process.poll() is not None
        if not exited_by_itself:
            if task.container:
                # `buildah run` does not pass SIGTERM on (it kills its child): signal the
                # container's entrypoint itself, as the container runtime does on Fargate.
                entrypoint = container_entrypoint(task.process.pid, task.marker)
                if entrypoint is not None:
                    _signal(entrypoint, signal.SIGTERM)
                else:
                    _signal_group(task.process.pid, signal.SIGTERM)
            else:
                _signal_group(task.process.pid, signal.SIGTERM)
            try:
                task.process.wait(timeout=self._grace_seconds)
            except subprocess.TimeoutExpired:
                say(f"{short(task.conversation_id)} sandbox ignored SIGTERM for {self._grace_seconds:g} s: SIGKILL")
        _signal_group(task.process.pid, signal.SIGKILL)
        task.process.wait()
        if self._task_credentials is not None:
            self._task_credentials.revoke(task.credentials_token)  # as ECS does for a stopped task
        leftovers = kill_marked_processes(task.marker)
        if task.uids is not None:
            try:
                leftovers += task.uids.end()
            except RuntimeError as error:
                say(f"{short(task.conversation_id)} sandbox processes survived: {error}")
        for private in ("runtime", "slash-tmp"):
            shutil.rmtree(task.directory / private, ignore_errors=True)
        if task.container:
            SandboxContainer(task.container, self._sandbox_image or "").remove()
        code = task.process.returncode
        seconds = time.monotonic() - task.started_at
        how = "exited" if exited_by_itself else "stopped"
        extra = f", killed {leftovers} leftover process(es)" if leftovers else ""
        say(f"{short(task.conversation_id)} sandbox {how} after {seconds:.1f} s (exit code {code}; {reason}){extra}")
        task.record(exit_code=code, stopped_reason=reason)
        if report and not self._stopping.is_set():
            try:
                self._ecs.stop_task(cluster=self._cluster, task=task.task_arn, reason=reason[:255])
            except Exception as error:
                say(f"{short(task.conversation_id)} could not stop task {short(task.task_id)}: {error}")
        if self._on_task_stopped is not None and not self._stopping.is_set():
            # `report`: we saw the process end before anyone asked ECS to stop the task.
            stop_code = "EssentialContainerExited" if report else "UserInitiated"
            event = self.task_stopped_event(task, reason, stop_code, container_exit_code(code))
            try:
                self._on_task_stopped(event)
            except Exception as error:
                say(f"{short(task.conversation_id)} task state change not delivered: {type(error).__name__}: {error}")
        task.ended.set()

    def task_stopped_event(self, task: SandboxTask, reason: str, stop_code: str, exit_code: int) -> dict[str, Any]:
        """The EventBridge event ECS publishes when a task has stopped (the fields a rule or a
        handler may read; AWS sends a few more, such as attachments and resource usage)."""
        now = _now_iso()
        container_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:container/{task.task_id}/{uuid.uuid4()}"
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "account": ACCOUNT_ID,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [task.task_arn],
            "detail": {
                "clusterArn": self._cluster,
                "taskArn": task.task_arn,
                "taskDefinitionArn": task.task_definition_arn,
                "group": task.group,
                "startedBy": task.started_by,
                "launchType": "FARGATE",
                "lastStatus": "STOPPED",
                "desiredStatus": "STOPPED",
                "stoppedReason": reason,
                "stopCode": stop_code,
                "createdAt": task.created_at or now,
                "stoppingAt": now,
                "stoppedAt": now,
                "containers": [
                    {
                        "containerArn": container_arn,
                        "taskArn": task.task_arn,
                        "name": task.container_name,
                        "lastStatus": "STOPPED",
                        "exitCode": exit_code,
                    }
                ],
                "version": 3,
            },
        }


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value or "")


def container_entrypoint(group: int, marker: str) -> int | None:
    """The entrypoint of a `buildah run` in process group `group`: the first process of that
    group with the marker (buildah's own processes have none; the agent-server and tmux left
    the group)."""
    candidates = []
    for pid in marked_processes(marker):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:
            candidates.append((int(fields[19]), pid))  # start time, so the oldest comes first
    return min(candidates)[1] if candidates else None


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


__all__ = [
    "LocalFargate",
    "SandboxTask",
    "container_exit_code",
    "free_port",
    "kill_marked_processes",
    "marked_processes",
]
