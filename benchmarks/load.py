"""The local stack under load: `python -m devstack --port P --state-dir D`, driven over HTTP.

At each concurrency level C, C client threads POST /api/conversations (the sample repository
`https://github.com/user/repo.git`, which the local stack serves itself) back to back until the
level's N creates are sent; a poller follows every conversation to RUNNING or ERROR. Reported:
creates per second (successful POSTs over the wall time of the POST phase), POST-to-RUNNING
p50/p95 (from sending the POST to the first GET that shows RUNNING, polled every 0.25 s),
failed creates, duplicate ids, conversations that ended in ERROR.

The local stack has one user (local-user) and the template's limit (3) with close_oldest, and
its CLI has no switch for the limit. At concurrency 1 and 10 this benchmark raises the local
user's own limit (`max_active_conversations` on its settings item, which the service honours)
in the stack's moto, so every conversation reaches RUNNING. At 50 it keeps the limit of 3: fifty
real agent-servers booting at once on two cores would take minutes each; with close_oldest all
fifty creates succeed, 47 are closed (STOPPED, their sandboxes stopped) and POST-to-RUNNING is
that of the survivors. Each level runs on a fresh stack. Every sandbox is a real local process
running the real openhands-agent-server (.venv-agent). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, percentile

# (concurrency, creates, per-user limit or None for the template's 3 with close_oldest)
LEVELS: tuple[tuple[int, int, int | None], ...] = ((1, 3, 20), (10, 10, 20), (50, 50, None))
REPOSITORY = "https://github.com/user/repo.git"
READY_TIMEOUT = 120.0
RUNNING_TIMEOUT = 240.0
POLL_SECONDS = 0.25
USERS_TABLE = "local-UsersTable"
LOCAL_USER = "local-user"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalStackProcess:
    def __init__(self, state_dir: Path, pool: int = 0) -> None:
        self.port = _free_port()
        self.state_dir = state_dir
        self.pool = pool  # warm sandboxes (--pool); the load benchmark measures cold starts
        self.process: subprocess.Popen[str] | None = None
        self.api_url = ""
        self.moto_url = ""
        self.output: list[str] = []

    def __enter__(self) -> LocalStackProcess:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "devstack", "--port", str(self.port)),
                *("--state-dir", str(self.state_dir), "--pool", str(self.pool)),
            ],
            cwd=str(ROOT),
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line.rstrip())
            if match := re.search(r"AWS \(moto\)\s+(http://\S+)", line):
                self.moto_url = match.group(1)
            if line.startswith("devstack ready:"):
                self.api_url = line.split(":", 1)[1].strip()
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.__exit__(None, None, None)
        raise RuntimeError("the local stack did not print its ready line:\n" + "\n".join(self.output[-30:]))

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip())

    def __exit__(self, *_: Any) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def raise_user_limit(self, limit: int) -> None:
        """The local user's own `max_active_conversations`, straight into the stack's moto."""
        import boto3

        client = boto3.client(
            "dynamodb",
            endpoint_url=self.moto_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's fake credentials
        )
        client.update_item(
            TableName=USERS_TABLE,
            Key={"pk": {"S": f"USER#{LOCAL_USER}"}, "sk": {"S": "SETTINGS"}},
            UpdateExpression="SET max_active_conversations = :limit",
            ExpressionAttributeValues={":limit": {"N": str(limit)}},
        )


def _request(method: str, url: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - loopback
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def run_level(concurrency: int, creates: int, limit: int | None, work: Path, log: Any = print) -> dict[str, Any]:
    with LocalStackProcess(work / f"stack-{concurrency}") as stack:
        if limit is not None:
            stack.raise_user_limit(limit)
        sent: dict[str, float] = {}
        outcomes: list[tuple[int, Any]] = []
        lock = threading.Lock()
        remaining = iter(range(creates))

        def client() -> None:
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                began = time.monotonic()
                try:
                    status, body = _request("POST", f"{stack.api_url}/conversations", {"repository": REPOSITORY})
                except (OSError, ValueError) as error:  # a refused or reset connection is a failed create
                    status, body = 0, {"error": f"{type(error).__name__}: {error}"}
                with lock:
                    outcomes.append((status, body))
                    if status == 200:
                        sent[body["conversation_id"]] = began

        started = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            for _ in range(concurrency):
                pool.submit(client)
        post_seconds = time.monotonic() - started
        ended: dict[str, tuple[str, float]] = {}
        deadline = time.monotonic() + RUNNING_TIMEOUT
        while len(ended) < len(sent) and time.monotonic() < deadline:
            for conversation_id in list(sent):
                if conversation_id in ended:
                    continue
                try:
                    status, view = _request("GET", f"{stack.api_url}/conversations/{conversation_id}")
                except (OSError, ValueError):
                    continue
                if status == 200 and view["conversation_status"] in ("RUNNING", "ERROR", "STOPPED"):
                    ended[conversation_id] = (view["conversation_status"], time.monotonic())
            time.sleep(POLL_SECONDS)
        stuck = {}
        for conversation_id in sent:
            if conversation_id not in ended:
                try:
                    _, view = _request("GET", f"{stack.api_url}/conversations/{conversation_id}")
                except (OSError, ValueError) as error:
                    view = {"runtime_status": f"unreadable: {error}"}
                stuck[conversation_id] = {
                    "runtime_status": view.get("runtime_status"),
                    "timeline": [entry["phase"] for entry in view.get("timeline", [])],
                }
        if stuck:
            log(f"  load c={concurrency}: still starting at the deadline: {json.dumps(stuck)[:1500]}")
            log("  local stack output (last lines): " + " | ".join(stack.output[-15:]))
    ids = [body.get("conversation_id") for status, body in outcomes if status == 200]
    to_running = [ended[c][1] - sent[c] for c in sent if c in ended and ended[c][0] == "RUNNING"]
    result = {
        "concurrency": concurrency,
        "creates": creates,
        "per_user_limit": limit or "3 (template default, close_oldest)",
        "succeeded": len(ids),
        "failed": [f"{status} {body}" for status, body in outcomes if status != 200][:5],
        "failed_count": sum(1 for status, _ in outcomes if status != 200),
        "duplicate_ids": len(ids) - len(set(ids)),
        "creates_per_second": len(ids) / post_seconds if post_seconds else 0.0,
        "post_phase_seconds": post_seconds,
        "running": len(to_running),
        "ended_other": {c: ended[c][0] for c in ended if ended[c][0] != "RUNNING"},
        "not_ended": len(sent) - len(ended),
        "not_ended_phases": [state["runtime_status"] for state in stuck.values()],
        "to_running_p50_s": percentile(to_running, 50) if to_running else None,
        "to_running_p95_s": percentile(to_running, 95) if to_running else None,
    }
    log(
        f"  load c={concurrency}: {result['creates_per_second']:.1f} creates/s, "
        f"{result['running']}/{creates} RUNNING, p50 {result['to_running_p50_s']} s"
    )
    return result


def run(levels: tuple[tuple[int, int, int | None], ...] = LEVELS, log: Any = print) -> dict[str, Any]:
    if not (ROOT / ".venv-agent" / "bin" / "python").exists():
        return {"skipped": ".venv-agent is missing: run `make install` (the sandbox runs the real agent-server)"}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as temporary:
        return {
            "repository": REPOSITORY,
            "levels": [run_level(c, n, limit, Path(temporary), log) for c, n, limit in levels],
        }


if __name__ == "__main__":
    # python -m benchmarks.load 10x10x20 50x50  (concurrency x creates [x limit])
    chosen = tuple(
        (int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) > 2 else None)
        for parts in (level.split("x") for level in sys.argv[1:])
    )
    print(json.dumps(run(chosen or LEVELS), indent=2))
