"""Starts on the local stack: POST -> RUNNING for cold starts (`--pool 0`) and warm ones (pool on),
against the bare agent-server boot measured in the same run, and a burst larger than the pool.

- *Bare boot* (the floor of a cold start): `.venv-agent/bin/python -I -u -m openhands.agent_server`
  as the bootstrap starts it (`LITELLM_LOCAL_MODEL_COST_MAP=True`), from spawn to the first
  `/health` that answers 200, polled every 0.1 s. Measured before every cold sample and after the
  last (this machine's speed drifts by half within an hour: each cold sample has a boot beside
  it, and the paired difference is reported as well as the two p50s).
- *Cold*: `python -m devstack --pool 0`; one create at a time of the sample repository
  `https://github.com/user/repo.git` (`develop`, its setup script and pre-commit hook), from
  sending the POST to the first GET that shows RUNNING (polled every 0.2 s), then DELETE, and the
  next sample waits until that sandbox has stopped (its agent-server's port closed): each sample
  has the machine and the per-user limit (3) to itself.
- *Warm*: `python -m devstack --pool 2`; before each sample the benchmark waits until the pool
  table shows the pool full again (2 idle: the reconciler's refill of the previous claim), then
  the same create and DELETE: on Fargate no other sandbox's boot shares a start's CPU, here the
  only one beside it is the refill its own claim starts (at the idle niceness). Every warm sample
  must report `"start": "warm"`.
- *Burst*: with 2 idle, 4 creates at once (the local user's own limit raised for it, as in
  benchmarks/load.py): every one must reach RUNNING, the warm ones before the cold ones, each
  claimed pool item names one of the burst's conversations and no sandbox or conversation twice;
  then the time until the pool shows 2 idle again (the refill).
- *Hops*: each sample's `start_hops` (the conversation's view once RUNNING: the service's hops,
  which add up to QUEUED -> READY, and the sandbox's own steps), plus two the client sees: the
  POST's round trip and READY -> the GET that showed RUNNING (the poll's slack). The p50 of each
  hop, warm and cold, is in the results and docs/performance.md.

Every sandbox is a real local process with the real bootstrap and agent-server; 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, percentile
from benchmarks.load import LocalStackProcess, _free_port, _request
from tests.support.ports import port_is_open
from tests.support.waiting import wait_until

AGENT_PYTHON = ROOT / ".venv-agent" / "bin" / "python"
BODY = {"repository": "https://github.com/user/repo.git", "selected_branch": "develop", "initial_user_msg": "hi"}
POOL = 2
BURST = 4
POOL_TABLE = "local-SandboxPoolTable"
BOOT_TIMEOUT = 240.0  # an agent-server boot: 13 s idle, 40 s or more on a busy machine
RUNNING_TIMEOUT = 300.0
STOP_TIMEOUT = 60.0  # a sandbox's stop: SIGTERM, the agent-server's own shutdown (10 s at most)
POLL_SECONDS = 0.2  # each GET runs the authorizer and the API in the stack's one process: not faster
AIM_WARM_P50_S = 1.5
AIM_WARM_P95_S = 2.5
AIM_COLD_OVER_BARE_S = 1.5


def load_average() -> float:
    return os.getloadavg()[0]


def bare_boot_seconds(
    work: Path, *, launcher: Sequence[str] = (), python: str = str(AGENT_PYTHON), options: Sequence[str] = ()
) -> float:
    """The agent-server alone, launched as the bootstrap launches it, to its first healthy /health.
    `launcher` runs it elsewhere (benchmarks/boot.py: in the image), `options` are Python's own."""
    port = _free_port()
    home = Path(tempfile.mkdtemp(prefix="bare-", dir=work))
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "SESSION_API_KEY": "bench-bare-boot",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    argv = [*launcher, python, "-I", "-u", *options, "-m", "openhands.agent_server", "--host", "127.0.0.1"]
    argv += ["--port", str(port)]
    began = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=str(home),
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the bare agent-server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    try:
        wait_until(healthy, BOOT_TIMEOUT, "the bare agent-server's /health", interval=0.1)
        return time.monotonic() - began
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def pool_items(stack: LocalStackProcess) -> list[dict[str, Any]]:
    import boto3
    from boto3.dynamodb.types import TypeDeserializer

    client = boto3.client(
        "dynamodb",
        endpoint_url=stack.moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's fake credentials
    )
    deserializer = TypeDeserializer()
    items = client.scan(TableName=POOL_TABLE, ConsistentRead=True)["Items"]
    return [{key: deserializer.deserialize(value) for key, value in item.items()} for item in items]


def idle_count(stack: LocalStackProcess) -> int:
    return sum(1 for item in pool_items(stack) if item.get("pool_status") == "IDLE")


def wait_for_idle(stack: LocalStackProcess, count: int) -> float:
    began = time.monotonic()
    wait_until(lambda: idle_count(stack) >= count, BOOT_TIMEOUT, f"{count} idle pool sandboxes", interval=0.5)
    return time.monotonic() - began


def create(stack: LocalStackProcess) -> tuple[str, float]:
    conversation_id, began, _ = timed_create(stack)
    return conversation_id, began


def timed_create(stack: LocalStackProcess) -> tuple[str, float, float]:
    """(conversation id, when the POST was sent, its round trip in seconds)."""
    began = time.monotonic()
    status, body = _request("POST", f"{stack.api_url}/conversations", BODY)
    if status != 200:
        raise RuntimeError(f"create failed: {status} {body}")
    return str(body["conversation_id"]), began, time.monotonic() - began


def wait_running(stack: LocalStackProcess, conversation_id: str, began: float) -> tuple[float, dict[str, Any]]:
    """(seconds from the POST to the first GET showing RUNNING, that view); ERROR or STOPPED raise."""

    def ended() -> dict[str, Any] | None:
        status, view = _request("GET", f"{stack.api_url}/conversations/{conversation_id}")
        if status == 200 and view["conversation_status"] in ("RUNNING", "ERROR", "STOPPED"):
            return dict(view, seen_at=time.monotonic())
        return None

    view = wait_until(ended, RUNNING_TIMEOUT, f"{conversation_id} RUNNING", interval=POLL_SECONDS)
    if view["conversation_status"] != "RUNNING":
        raise RuntimeError(f"{conversation_id} ended {view['conversation_status']}: {view.get('error_code')}")
    return view["seen_at"] - began, view


def delete(stack: LocalStackProcess, conversation_id: str) -> None:
    status, body = _request("DELETE", f"{stack.api_url}/conversations/{conversation_id}")
    if status not in (200, 204):
        raise RuntimeError(f"delete {conversation_id} failed: {status} {body}")


def one_start(stack: LocalStackProcess) -> tuple[float, str, dict[str, float]]:
    """(POST -> RUNNING seconds, warm or cold, that start's hops in milliseconds). The sample ends
    when its sandbox has stopped (its agent-server's port closed): the next one does not share the
    machine with this one's teardown."""
    conversation_id, began, post_seconds = timed_create(stack)
    seconds, view = wait_running(stack, conversation_id, began)
    delete(stack, conversation_id)
    agent_server = urllib.parse.urlsplit(view["agent_server_url"])
    wait_until(
        lambda: not port_is_open(agent_server.port or 80, agent_server.hostname or "127.0.0.1"),
        STOP_TIMEOUT,
        f"{conversation_id}'s sandbox to stop",
    )
    return seconds, str(view.get("start")), sample_hops(view, post_seconds, seconds)


def sample_hops(view: dict[str, Any], post_seconds: float, running_seconds: float) -> dict[str, float]:
    """`<measured_by>.<hop>` -> milliseconds, in order: the POST, the service's and sandbox's hops,
    and what is left between READY and the GET that showed RUNNING (the client's side of the clock)."""
    hops = {"client.post": round(post_seconds * 1000.0, 1)}
    recorded = view.get("start_hops") or []
    hops.update({f"{hop['measured_by']}.{hop['hop']}": float(hop["milliseconds"]) for hop in recorded})
    service_ms = sum(float(hop["milliseconds"]) for hop in recorded if hop["measured_by"] == "service")
    # The POST's own time is before QUEUED's write and after it; the rest of POST -> RUNNING beyond
    # QUEUED -> READY is the answer's way back and the poll.
    hops["client.ready_to_seen_running"] = round(
        max(0.0, running_seconds * 1000.0 - service_ms - post_seconds * 1000.0), 1
    )
    return hops


def hop_p50s(samples: list[dict[str, float]]) -> dict[str, float]:
    """p50 of each hop over the samples that have it, in the order hops first appear."""
    names: list[str] = []
    for sample in samples:
        names += [name for name in sample if name not in names]
    return {name: percentile([s[name] for s in samples if name in s], 50) for name in names}


def _summary(samples: list[float]) -> dict[str, Any]:
    return {
        "samples": samples,
        "p50_s": percentile(samples, 50) if samples else None,
        "p95_s": percentile(samples, 95) if samples else None,
    }


def first_start(stack: LocalStackProcess, kind: str, log: Any) -> float:
    """One start on the fresh stack before the samples, kept out of them: the local stack's Lambda
    environments are made on first use (each function's import and first-call set-up, about 0.5 s
    of CPU apiece: the cold-start section measures them), as after a deploy on AWS; the samples
    measure the start path once they exist. Its time is reported beside the samples."""
    seconds, start, _ = one_start(stack)
    if start != kind:
        raise RuntimeError(f"the first {kind} start reported start={start!r}")
    log(f"  start: first {kind} start on the fresh stack {seconds:.1f} s (not a sample)")
    return seconds


def run_cold(samples: int, bare_every: int, work: Path, log: Any) -> tuple[dict[str, Any], list[float]]:
    cold: list[float] = []
    bare: list[float] = []
    loads: list[float] = []
    hops: list[dict[str, float]] = []
    with LocalStackProcess(work / "stack-cold", pool=0) as stack:
        first = first_start(stack, "cold", log)
        for index in range(samples):
            if index % bare_every == 0:
                bare.append(bare_boot_seconds(work))
                log(f"  start: bare agent-server boot {bare[-1]:.1f} s (load {load_average():.1f})")
            loads.append(load_average())
            seconds, start, sample = one_start(stack)
            if start != "cold":
                raise RuntimeError(f"a --pool 0 start reported start={start!r}")
            cold.append(seconds)
            hops.append(sample)
            log(f"  start: cold {index + 1}/{samples} {seconds:.1f} s (load {loads[-1]:.1f})")
    bare.append(bare_boot_seconds(work))
    log(f"  start: bare agent-server boot {bare[-1]:.1f} s (load {load_average():.1f})")
    summary = {**_summary(cold), "first_start_s": first, "load_average_1m": loads}
    return {**summary, "hops_ms": hops, "hop_p50_ms": hop_p50s(hops)}, bare


def run_warm(samples: int, work: Path, log: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    warm: list[float] = []
    loads: list[float] = []
    refills: list[float] = []
    hops: list[dict[str, float]] = []
    with LocalStackProcess(work / "stack-warm", pool=POOL) as stack:
        wait_for_idle(stack, POOL)
        first = first_start(stack, "warm", log)
        for index in range(samples):
            refills.append(wait_for_idle(stack, POOL))
            loads.append(load_average())
            seconds, start, sample = one_start(stack)
            if start != "warm":
                raise RuntimeError(f"a start with an idle pool sandbox reported start={start!r}")
            warm.append(seconds)
            hops.append(sample)
            log(f"  start: warm {index + 1}/{samples} {seconds:.1f} s (load {loads[-1]:.1f})")
        burst = run_burst(stack, log)
    summary = {**_summary(warm), "first_start_s": first, "load_average_1m": loads}
    summary["waited_for_an_idle_sandbox_s"] = refills
    return {**summary, "hops_ms": hops, "hop_p50_ms": hop_p50s(hops)}, burst


def run_burst(stack: LocalStackProcess, log: Any) -> dict[str, Any]:
    stack.raise_user_limit(BURST + 2)
    wait_for_idle(stack, POOL)
    idle_before = {item["sandbox_id"] for item in pool_items(stack) if item.get("pool_status") == "IDLE"}
    load = load_average()
    barrier = threading.Barrier(BURST)

    def one() -> tuple[str, float, dict[str, Any]]:
        barrier.wait()
        conversation_id, began = create(stack)
        seconds, view = wait_running(stack, conversation_id, began)
        return conversation_id, seconds, view

    with ThreadPoolExecutor(BURST) as threads:
        outcomes = list(threads.map(lambda _: one(), range(BURST)))
    items = pool_items(stack)
    burst_ids = {conversation_id for conversation_id, _, _ in outcomes}
    claimed = [item for item in items if item.get("conversation_id") in burst_ids]
    claimed_sandboxes = [item["sandbox_id"] for item in claimed]
    claimed_conversations = [item["conversation_id"] for item in claimed]
    starts = {conversation_id: str(view.get("start")) for conversation_id, _, view in outcomes}
    warm_times = [seconds for conversation_id, seconds, _ in outcomes if starts[conversation_id] == "warm"]
    cold_times = [seconds for conversation_id, seconds, _ in outcomes if starts[conversation_id] == "cold"]
    refill_began = time.monotonic()
    for conversation_id in burst_ids:
        delete(stack, conversation_id)
    wait_for_idle(stack, POOL)
    refill_seconds = time.monotonic() - refill_began
    refilled = {item["sandbox_id"] for item in pool_items(stack) if item.get("pool_status") == "IDLE"}
    result = {
        "pool": POOL,
        "creates": BURST,
        "load_average_1m": load,
        "running": len(outcomes),
        "warm": len(warm_times),
        "cold": len(cold_times),
        "warm_seconds": sorted(warm_times),
        "cold_seconds": sorted(cold_times),
        "warm_before_cold": bool(warm_times and cold_times and max(warm_times) < min(cold_times)),
        "claimed_items": len(claimed),
        "claimed_were_idle_before": sorted(set(claimed_sandboxes)) == sorted(idle_before & set(claimed_sandboxes))
        and len(set(claimed_sandboxes)) == len(warm_times),
        "sandbox_claimed_twice": len(claimed_sandboxes) != len(set(claimed_sandboxes))
        or len(claimed_conversations) != len(set(claimed_conversations)),
        "refill_to_pool_s": refill_seconds,  # from the burst's last RUNNING to the pool idle again
        "refilled_with_new_sandboxes": not (refilled & idle_before),
    }
    log(
        f"  start: burst {BURST} on pool {POOL}: {result['warm']} warm {result['warm_seconds']}, "
        f"{result['cold']} cold {result['cold_seconds']}, refill {refill_seconds:.1f} s"
    )
    return result


def run(samples: int = 10, bare_every: int = 1, log: Any = print) -> dict[str, Any]:
    if not AGENT_PYTHON.exists():
        return {"skipped": ".venv-agent is missing: run `make install` (the sandbox runs the real agent-server)"}
    with tempfile.TemporaryDirectory(prefix="bench-start-") as temporary:
        work = Path(temporary)
        load_before = load_average()
        cold, bare = run_cold(samples, bare_every, work, log)
        warm, burst = run_warm(samples, work, log)
    bare_p50 = percentile(bare, 50)
    result: dict[str, Any] = {
        "repository": BODY["repository"],
        "branch": BODY["selected_branch"],
        "pool": POOL,
        "load_average_1m_at_start": load_before,
        "load_average_1m_at_end": load_average(),
        "bare_boot": _summary(bare),
        "cold": cold,
        "warm": warm,
        "burst": burst,
        "aims": {
            "warm_p50_s": AIM_WARM_P50_S,
            "warm_p95_s": AIM_WARM_P95_S,
            "cold_p50_over_bare_s": AIM_COLD_OVER_BARE_S,
        },
    }
    result["cold_over_bare_p50_s"] = cold["p50_s"] - bare_p50
    if bare_every == 1:  # each cold sample against the boot measured just before it
        pairs = zip(cold["samples"], bare[: len(cold["samples"])], strict=True)
        result["cold_over_paired_bare_p50_s"] = percentile([cold_s - bare_s for cold_s, bare_s in pairs], 50)
    result["cold_over_bare_p50_ratio"] = cold["p50_s"] / bare_p50
    result["warm_over_cold_p50_ratio"] = warm["p50_s"] / cold["p50_s"]
    result["meets"] = {
        "warm_p50": warm["p50_s"] <= AIM_WARM_P50_S,
        "warm_p95": warm["p95_s"] <= AIM_WARM_P95_S,
        "cold_p50": cold["p50_s"] <= bare_p50 + AIM_COLD_OVER_BARE_S,
    }
    log(
        f"  start: bare p50 {bare_p50:.1f} s, cold p50 {cold['p50_s']:.1f} s, "
        f"warm p50 {warm['p50_s']:.1f} s p95 {warm['p95_s']:.1f} s"
    )
    for kind, figures in (("warm", warm), ("cold", cold)):
        log(f"  start: {kind} hop p50 (ms): " + ", ".join(f"{n} {v:.0f}" for n, v in figures["hop_p50_ms"].items()))
    return result
