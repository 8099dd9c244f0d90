"""A running conversation through the sandbox side of the channel, with the REAL agent-server.

One sandbox, shared by the tests of this module in file order (a boot takes 13-40 s), in
confirmation mode, while the control plane fails a share of every kind of call (webhook posts,
statuses, inbox polls, acks, workspace reports; half of the failed writes stored first). The
model is the scripted OpenAI-compatible server; everything else is real: the bootstrap, the
agent-server and its terminal, git, HTTP. (Without confirmation mode the agent runs the first
message's command at once: tests/e2e/test_conversation_channel.py.)
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openhands_sandbox.http_client import http_request, open_http
from sandbox_harness import (
    AGENT_VENV_PYTHON,
    ControlPlaneDouble,
    Secrets,
    bootstrap_environment,
    control_plane,
    make_context,
    start_bootstrap,
)

from devstack.scripted_model import ScriptedModelServer, finish, scripted_model, terminal

pytestmark = [
    pytest.mark.agent_server,
    pytest.mark.skipif(
        not AGENT_VENV_PYTHON.exists(), reason=f"the agent-server venv is missing ({AGENT_VENV_PYTHON})"
    ),
]

READY_TIMEOUT = 150
AGENT_TIMEOUT = 60
FAULTS = {"agent-events": 0.3, "agent-conversation": 0.3, "inbox": 0.3, "ack": 0.3, "workspace": 0.3}
WRITE_REQUEST = "Please write the agent file"
WRITE_COMMAND = "echo written-by-the-agent > agent-file.txt && cat agent-file.txt"


@dataclass
class Sandbox:
    plane: ControlPlaneDouble
    workspace: Path
    process: Any
    stderr_path: Path
    session_key: str
    ready: dict[str, Any] | None = None

    def agent_server_event_ids(self) -> list[str]:
        """Every event id the agent-server itself holds, oldest first."""
        assert self.ready is not None
        base = f"{self.ready['agent_server_url']}/api/conversations/{self.ready['agent_conversation_id']}"
        ids: list[str] = []
        page_id = None
        while True:
            query = "limit=100" + (f"&page_id={page_id}" if page_id else "")
            request = http_request(f"{base}/events/search?{query}", headers={"X-Session-API-Key": self.session_key})
            with open_http(request, 10) as response:
                page = json.loads(response.read())
            ids.extend(event["id"] for event in page["items"])
            page_id = page.get("next_page_id")
            if not page_id:
                return ids

    def statuses(self) -> list[str]:
        return [info["execution_status"] for info in list(self.plane.agent_statuses)]

    def wait_for_status(self, status: str, after: int = 0) -> None:
        self.plane.wait_until(lambda: status in self.statuses()[after:], AGENT_TIMEOUT, f"agent status {status}")

    def transcript(self) -> list[dict[str, Any]]:
        return self.plane.agent_transcript()

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.transcript() if event["kind"] == kind]

    def user_texts(self) -> list[str]:
        return [
            "".join(part.get("text", "") for part in event["llm_message"]["content"])
            for event in self.kinds("MessageEvent")
            if event["source"] == "user"
        ]


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedModelServer]:
    with scripted_model() as server:
        server.add_rule(WRITE_REQUEST, [terminal(WRITE_COMMAND), finish("I wrote agent-file.txt")])
        server.add_rule("confirm-reject", [terminal("echo rejected > rejected.txt"), finish("rejected")])
        yield server


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, model: ScriptedModelServer) -> Iterator[Sandbox]:
    import secrets as random_secrets

    secrets = Secrets(
        token="tok_" + random_secrets.token_hex(16),
        llm_key="sk-llm-" + random_secrets.token_hex(16),
        git_password="ghp_" + random_secrets.token_hex(16),
        session_key="sess_" + random_secrets.token_hex(16),
    )
    tmp = tmp_path_factory.mktemp("conversation")
    conversation_id = random_secrets.token_hex(16)
    context = make_context(conversation_id, secrets, repository=None, first_message=WRITE_REQUEST)
    context["llm"]["base_url"] = model.base_url
    context["agent"]["confirmation_mode"] = True
    with control_plane(secrets.token, context) as plane:
        plane.fail_share = dict(FAULTS)
        env = bootstrap_environment(
            conversation_id=conversation_id,
            api_url=plane.url,
            token=secrets.token,
            workspace_root=tmp / "workspace",
            scratch=tmp / "scratch",
            extra={"AGENT_SERVER_PYTHON": str(AGENT_VENV_PYTHON), "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        )
        stderr_path = tmp / "bootstrap.stderr"
        process = start_bootstrap(env, stderr_path)
        running = Sandbox(plane, tmp / "workspace" / "project", process, stderr_path, secrets.session_key)
        try:
            ready = plane.wait_for(lambda e: e["type"] in {"ready", "failed"}, READY_TIMEOUT)
            assert ready["type"] == "ready", stderr_path.read_text()[-3000:]
            running.ready = ready
            running.session_key = ready["session_api_key"]  # the agent-server's own (it booted first)
            yield running
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def test_the_first_message_waits_for_confirmation_then_runs_a_real_command(sandbox: Sandbox) -> None:
    sandbox.wait_for_status("waiting_for_confirmation")
    assert not (sandbox.workspace / "agent-file.txt").exists()
    sandbox.plane.push({"kind": "confirmation", "accept": True, "reason": ""})
    sandbox.wait_for_status("finished")  # the finish action needs no confirmation
    sandbox.plane.wait_until(
        lambda: any("agent-file.txt" in [f["path"] for f in w["files"]] for w in sandbox.plane.workspaces),
        AGENT_TIMEOUT,
        "the workspace report",
    )
    (action,) = [e for e in sandbox.kinds("ActionEvent") if e["tool_name"] == "terminal"]
    assert action["action"]["command"] == WRITE_COMMAND
    (observation,) = [e for e in sandbox.kinds("ObservationEvent") if e["action_id"] == action["id"]]
    assert observation["observation"]["exit_code"] == 0
    assert "written-by-the-agent" in observation["observation"]["content"][0]["text"]
    assert (sandbox.workspace / "agent-file.txt").read_text() == "written-by-the-agent\n"

    report = sandbox.plane.workspaces[-1]
    assert report["branch"] == "main" and report["head_commit"] is None
    assert {"path": "agent-file.txt", "status": "added", "additions": 1, "deletions": 0} in report["files"]
    assert "+written-by-the-agent" in report["diff"] and report["diff_truncated"] is False
    assert sandbox.user_texts() == [WRITE_REQUEST]


def test_messages_reach_the_agent_once_each_and_the_transcript_is_complete(
    sandbox: Sandbox, model: ScriptedModelServer
) -> None:
    sandbox.wait_for_status("finished")
    acknowledged = len(sandbox.plane.acknowledged)
    texts = [f"follow-up number {n}" for n in range(1, 4)]
    for text in texts:
        sandbox.plane.push({"kind": "message", "text": text, "image_urls": []})
    sandbox.plane.wait_until(
        lambda: len(sandbox.plane.acknowledged) == acknowledged + len(texts), AGENT_TIMEOUT, "acks"
    )
    sandbox.plane.wait_until(lambda: sandbox.user_texts()[1:] == texts, AGENT_TIMEOUT, "the messages in the events")
    # Each reached the model (one request may carry two: the agent-server queues a message that
    # arrives while the agent is at work into its next step).
    for text in texts:
        model.wait_for_request(lambda request, text=text: text in request.user_texts, AGENT_TIMEOUT)

    # Complete and in order, although a third of all calls failed: what the agent-server holds
    # reaches the control plane, each event once, in timestamp order.
    assert sum(sandbox.plane.failures.values()) > 5, sandbox.plane.failures
    sandbox.wait_for_status("finished", after=len(sandbox.statuses()) - 1)
    held = sandbox.agent_server_event_ids()
    sandbox.plane.wait_until(
        lambda: set(held) <= set(sandbox.plane.agent_events), AGENT_TIMEOUT, "every event of the agent-server"
    )
    stored = sandbox.transcript()
    assert [event["id"] for event in stored if event["id"] in set(held)] == held
    timestamps = [event["timestamp"] for event in stored]
    assert timestamps == sorted(timestamps)
    assert len({event["id"] for event in stored}) == len(stored)


def test_a_rejected_action_is_not_run(sandbox: Sandbox) -> None:
    sandbox.wait_for_status("finished")
    count = len(sandbox.statuses())
    sandbox.plane.push({"kind": "message", "text": "confirm-reject please", "image_urls": []})
    sandbox.wait_for_status("waiting_for_confirmation", after=count)
    sandbox.plane.push({"kind": "confirmation", "accept": False, "reason": "not this one"})
    sandbox.plane.wait_until(
        lambda: any(e["kind"] == "UserRejectObservation" for e in sandbox.transcript()), AGENT_TIMEOUT, "the rejection"
    )
    assert not (sandbox.workspace / "rejected.txt").exists()
    (rejection,) = [e for e in sandbox.transcript() if e["kind"] == "UserRejectObservation"]
    assert rejection["rejection_reason"] == "not this one"
