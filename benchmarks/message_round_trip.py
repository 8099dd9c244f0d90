"""Message round trip on the local stack: `POST .../messages` -> the agent's first event after it,
as the owner sees it through the API, against the agent-server's own round trip in the same run.

`python -m devstack` runs the whole service (the real bootstrap, agent-server, relay and inbox
poller); the model is the scripted OpenAI-compatible server (devstack/scripted_model.py), which
answers every message with a `finish` tool call in about a millisecond, so what is measured is the
channel, not a model. One conversation; rounds alternate:

- *through the service*: `POST /api/conversations/{id}/messages`, then the owner's long poll
  `GET .../events?wait=20` from the cursor until an event with `source` `agent` follows the user
  message carrying that text (inbox long poll -> agent-server -> webhook -> relay -> sandbox API ->
  events API);
- *baseline*: the same message posted to the agent-server itself
  (`POST /api/conversations/{id}/events`, `run: true`), then its own event list polled every 5 ms
  until an agent event follows that message (what a client next to the agent-server would see).

Each round waits for the agent to be `finished` again before the next starts.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from benchmarks.common import ROOT, percentile

AGENT_PYTHON = ROOT / ".venv-agent" / "bin" / "python"
BOOT_SECONDS = 180.0
RUNNING_SECONDS = 240.0
ROUND_SECONDS = 60.0
BASELINE_POLL_SECONDS = 0.005
STATUS_POLL_SECONDS = 0.25
"""Between reads of the conversation while waiting for the agent to finish (not part of a round)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Stack:
    """`python -m devstack` in its own process group, its output collected."""

    def __init__(self, state_dir: Path, environment: dict[str, str]) -> None:
        inherited = {k: v for k, v in os.environ.items() if not re.match(r"^(AWS_|LLM_|POWERTOOLS_|MOTO_)", k)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack", "--port", str(_free_port()), "--state-dir", str(state_dir)],
            cwd=ROOT,
            env={**inherited, **environment, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.api = ""
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if match := re.search(r"devstack ready: (http://127\.0\.0\.1:\d+/api)", line):
                self.api = match.group(1)
                self._ready.set()
        self._ready.set()

    def wait_ready(self) -> None:
        if not self._ready.wait(BOOT_SECONDS) or not self.api:
            raise RuntimeError("devstack did not start:\n" + "\n".join(self.lines[-40:]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _until(condition: Callable[[], Any], what: str, timeout: float) -> Any:
    from tests.support.waiting import wait_until

    return wait_until(condition, timeout, what, interval=STATUS_POLL_SECONDS)


def _text(event: dict[str, Any]) -> str:
    content = (event.get("llm_message") or {}).get("content") or []
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))


def _message_and_answer(events: list[dict[str, Any]], text: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The user message holding `text` and the first agent event after it (agent-server JSON)."""
    message = None
    for event in events:
        if event.get("kind") == "MessageEvent" and event.get("source") == "user" and _text(event) == text:
            message = event
        elif message is not None and event.get("source") == "agent":
            return message, event
    return None


def _agent_after(events: list[dict[str, Any]], text: str) -> bool:
    return _message_and_answer(events, text) is not None


def _epoch(timestamp: str) -> float:
    """An agent-server timestamp (local time, no zone, as it writes them) in seconds since the epoch."""
    return datetime.fromisoformat(timestamp).timestamp()


def _session_key_of(port: int) -> str:
    """The agent-server's session key, from its own process environment (same user, this machine)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "openhands.agent_server" not in command or f"--port {port}" not in command:
                continue
            for variable in (entry / "environ").read_bytes().split(b"\0"):
                if variable.startswith(b"SESSION_API_KEY="):
                    return variable.split(b"=", 1)[1].decode()
        except OSError:
            continue
    raise RuntimeError(f"no agent-server on port {port}")


class _Conversation:
    def __init__(self, api: str, conversation_id: str) -> None:
        self.api = api
        self.id = conversation_id
        self.cursor: str | None = None
        self.http = requests.Session()

    def view(self) -> dict[str, Any]:
        return dict(self.http.get(f"{self.api}/conversations/{self.id}", timeout=30).json())

    def skip_to_end(self) -> None:
        """Move the cursor past every event stored so far."""
        while True:
            params: dict[str, Any] = {"limit": 100, **({"page_id": self.cursor} if self.cursor else {})}
            page = self.http.get(f"{self.api}/conversations/{self.id}/events", params=params, timeout=30).json()
            if not page["results"]:
                return
            self.cursor = page["next_page_id"]

    def service_round(self, text: str) -> tuple[float, dict[str, float]]:
        """Seconds from POST .../messages to the owner reading the agent's first event after it, and
        where they went (by the agent-server's own timestamps): in (to the agent-server), the agent,
        out (back to the owner)."""
        started, wall_started = time.perf_counter(), time.time()
        answer = self.http.post(f"{self.api}/conversations/{self.id}/messages", json={"text": text}, timeout=30)
        answer.raise_for_status()
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + ROUND_SECONDS
        while time.monotonic() < deadline:
            params: dict[str, Any] = {"limit": 100, "wait": 20, **({"page_id": self.cursor} if self.cursor else {})}
            page = self.http.get(f"{self.api}/conversations/{self.id}/events", params=params, timeout=60).json()
            self.cursor = page["next_page_id"] or self.cursor
            seen.extend(envelope["event"] or {} for envelope in page["results"])
            found = _message_and_answer(seen, text)
            if found:
                elapsed, wall_now = time.perf_counter() - started, time.time()
                message_at, answer_at = _epoch(found[0]["timestamp"]), _epoch(found[1]["timestamp"])
                parts = {"in": message_at - wall_started, "agent": answer_at - message_at, "out": wall_now - answer_at}
                return elapsed, parts
        raise RuntimeError(f"no agent event after {text!r} within {ROUND_SECONDS:g} s")


def _direct_round(agent_url: str, agent_id: str, session_key: str, text: str) -> float:
    """Seconds from posting to the agent-server itself to its own list showing the agent's event."""
    headers = {"X-Session-API-Key": session_key}
    base = f"{agent_url}/api/conversations/{agent_id}"
    http = requests.Session()
    body: dict[str, Any] = {"role": "user", "content": [{"type": "text", "text": text}], "run": True}
    query: dict[str, Any] = {"limit": 20, "sort_order": "TIMESTAMP_DESC"}
    started = time.perf_counter()
    http.post(f"{base}/events", json=body, headers=headers, timeout=30).raise_for_status()
    deadline = time.monotonic() + ROUND_SECONDS
    while time.monotonic() < deadline:
        page = http.get(
            f"{base}/events/search",
            params=query,
            headers=headers,
            timeout=30,
        ).json()
        if _agent_after(list(reversed(page["items"])), text):
            return time.perf_counter() - started
        time.sleep(BASELINE_POLL_SECONDS)
    raise RuntimeError(f"no agent event after {text!r} within {ROUND_SECONDS:g} s")


def run(rounds: int = 20, log: Callable[[str], None] = print) -> dict[str, Any]:
    if not AGENT_PYTHON.exists():
        raise RuntimeError(f"{AGENT_PYTHON} is missing: make install")
    sys.path.insert(0, str(ROOT))
    from devstack.scripted_model import scripted_model

    with tempfile.TemporaryDirectory(prefix="bench-roundtrip-") as work, scripted_model() as model:
        stack = _Stack(
            Path(work) / "state",
            {
                "LLM_MODEL": "openai/scripted",
                "LLM_API_KEY": "sk-" + secrets.token_hex(8),
                "LLM_BASE_URL": model.base_url,
            },
        )
        try:
            stack.wait_ready()
            created = requests.post(
                f"{stack.api}/conversations", json={"initial_user_msg": "bench: just finish"}, timeout=30
            ).json()
            conversation = _Conversation(stack.api, created["conversation_id"])
            _until(lambda: conversation.view()["conversation_status"] == "RUNNING", "RUNNING", RUNNING_SECONDS)
            _until(lambda: conversation.view().get("agent_status") == "finished", "finished", ROUND_SECONDS)
            view = conversation.view()
            agent_url, agent_id = view["agent_server_url"], view["agent_conversation_id"]
            session_key = _session_key_of(int(agent_url.rsplit(":", 1)[1]))
            conversation.skip_to_end()
            through_service: list[float] = []
            parts: dict[str, list[float]] = {"in": [], "agent": [], "out": []}
            baseline: list[float] = []
            for number in range(rounds):
                elapsed, split = conversation.service_round(f"bench message {number} via the service")
                through_service.append(elapsed)
                for name, seconds in split.items():
                    parts[name].append(seconds)
                _until(lambda: conversation.view().get("agent_status") == "finished", "finished", ROUND_SECONDS)
                baseline.append(_direct_round(agent_url, agent_id, session_key, f"bench message {number} direct"))
                _until(lambda: conversation.view().get("agent_status") == "finished", "finished", ROUND_SECONDS)
                conversation.skip_to_end()
                service_ms, direct_ms = through_service[-1] * 1000, baseline[-1] * 1000
                log(f"  round {number + 1}: service {service_ms:.0f} ms, direct {direct_ms:.0f} ms")
        finally:
            stack.stop()
        model_requests = len(model.received())
    service_p50, service_p95 = percentile(through_service, 50), percentile(through_service, 95)
    baseline_p50, baseline_p95 = percentile(baseline, 50), percentile(baseline, 95)
    return {
        "rounds": rounds,
        "service_p50_ms": service_p50 * 1000,
        "service_p95_ms": service_p95 * 1000,
        "baseline_p50_ms": baseline_p50 * 1000,
        "baseline_p95_ms": baseline_p95 * 1000,
        "p50_ratio": service_p50 / baseline_p50,
        "p95_ratio": service_p95 / baseline_p95,
        "service_ms": [round(value * 1000, 1) for value in through_service],
        "service_parts_p50_ms": {name: percentile(values, 50) * 1000 for name, values in parts.items()},
        "baseline_ms": [round(value * 1000, 1) for value in baseline],
        "model_requests": model_requests,
    }
