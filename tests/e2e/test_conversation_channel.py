"""End to end on the local stack: talking to a running conversation through the service's API alone.

`python -m devstack` runs the service with the real bootstrap and agent-server; the LLM provider is
the scripted OpenAI-compatible server of devstack/scripted_model.py, run in this process so the test
reads what it received. The stack fails a fifth of the sandboxes' channel calls
(`--sandbox-api-faults 0.2`: webhook posts, statuses, inbox polls and acks answered 502, half of
them after the service did the work), so every check below also holds through those failures.
One stack for the module; the tests run in file order, each building on the one before:

1. a conversation created with a first message: the agent runs a real terminal command that writes a
   file, then finishes; the API shows the action, the observation with the command's real output,
   `agent_status` `finished` and the file in the workspace diff;
2. a second message reaches the model and appears in the events, once; the stored transcript holds
   every event the agent-server has, in order, and no secret;
3. confirmation mode: the agent waits; accept runs the action, reject does not;
4. after stop the events are still readable; after DELETE they are gone;
5. Ctrl-C leaves nothing running.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from devstack.scripted_model import ScriptedModelServer, finish, scripted_model, terminal
from tests.e2e.local_stack import (
    AGENT_PYTHON,
    RunningStack,
    agent_server_pid,
    environment_variable,
    free_port,
    processes_using,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.agent_server, pytest.mark.timeout(900)]

BOOT_TIMEOUT = 120.0
RUNNING_TIMEOUT = 240.0
AGENT_TIMEOUT = 90.0
FAULT_SHARE = "0.2"
WRITE_REQUEST = "Please write hello.txt for me"
WRITE_COMMAND = "echo hello-from-the-agent > hello.txt && cat hello.txt"
SECOND_MESSAGE = "Thanks! Now say goodbye."


@dataclass
class Channel:
    stack: RunningStack
    model: ScriptedModelServer
    llm_key: str
    conversations: dict[str, str] = field(default_factory=dict)
    remembered_events: dict[str, list[str]] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"{self.stack.base_url}/api"

    def conversation(self, label: str) -> str:
        if label not in self.conversations:
            pytest.skip(f"needs the {label!r} conversation of an earlier test")
        return self.conversations[label]

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(f"{self.api}{path}", params=params, timeout=40)

    def post(self, path: str, body: Any = None) -> requests.Response:
        return requests.post(f"{self.api}{path}", json=body, timeout=40)

    def view(self, conversation_id: str) -> dict[str, Any]:
        response = self.get(f"/conversations/{conversation_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def events(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every stored event, oldest first, page after page (`limit` 100)."""
        found: list[dict[str, Any]] = []
        page_id: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"page_id": page_id} if page_id else {})}
            response = self.get(f"/conversations/{conversation_id}/events", **params)
            assert response.status_code == 200, response.text
            page = response.json()
            found.extend(page["results"])
            if not page["results"] or not page.get("next_page_id"):
                return found
            page_id = page["next_page_id"]

    def wait_until(self, condition: Callable[[], Any], what: str, timeout: float = AGENT_TIMEOUT) -> Any:
        try:
            return wait_until(condition, timeout, what, interval=0.3)
        except AssertionError:
            print("\n".join(self.stack.lines[-120:]))  # the stack's console goes with the failure
            raise

    def wait_for_agent_status(self, conversation_id: str, status: str) -> None:
        self.wait_until(lambda: self.view(conversation_id).get("agent_status") == status, f"agent_status {status}")

    def create(self, label: str, body: dict[str, Any]) -> str:
        response = self.post("/conversations", body)
        assert response.status_code == 200, response.text
        conversation_id = str(response.json()["conversation_id"])
        self.wait_until(
            lambda: self.view(conversation_id)["conversation_status"] in {"RUNNING", "ERROR"},
            f"{label} to start",
            RUNNING_TIMEOUT,
        )
        view = self.view(conversation_id)
        assert view["conversation_status"] == "RUNNING", view
        self.conversations[label] = conversation_id
        return conversation_id


def user_texts(events: list[dict[str, Any]]) -> list[str]:
    return [
        "".join(part.get("text", "") for part in event["event"]["llm_message"]["content"])
        for event in events
        if event["kind"] == "MessageEvent" and event["source"] == "user" and event.get("event")
    ]


def workspace_files(channel: Channel, conversation_id: str) -> dict[str, dict[str, Any]]:
    response = channel.get(f"/conversations/{conversation_id}/workspace")
    if response.status_code != 200:
        return {}
    return {changed["path"]: changed for changed in response.json()["files"]}


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Channel]:
    if not AGENT_PYTHON.exists():
        pytest.skip(f"{AGENT_PYTHON} is missing: the sandboxes need openhands-agent-server")
    llm_key = "sk-scripted-" + secrets.token_hex(16)
    with scripted_model() as model:
        model.add_rule(WRITE_REQUEST, [terminal(WRITE_COMMAND), finish("hello.txt is written")])
        model.add_rule(SECOND_MESSAGE, [finish("Goodbye!")])
        model.add_rule("confirm-accept", [terminal("echo accepted > accepted.txt"), finish("accepted")])
        model.add_rule("confirm-reject", [terminal("echo rejected > rejected.txt"), finish("rejected")])
        stack = RunningStack.start(
            tmp_path_factory.mktemp("devstack") / "state",
            free_port(),
            {"LLM_MODEL": "openai/scripted", "LLM_API_KEY": llm_key, "LLM_BASE_URL": model.base_url},
            ("--sandbox-api-faults", FAULT_SHARE),
        )
        try:
            match = stack.wait_for_line(r"devstack ready: (http://127\.0\.0\.1:\d+)/api", BOOT_TIMEOUT)
            stack.base_url = match.group(1)
            yield Channel(stack, model, llm_key)
        finally:
            stack.kill_everything()


def test_the_first_message_runs_a_command_and_the_api_shows_it_all(channel: Channel) -> None:
    conversation_id = channel.create(
        "writer", {"repository": "user/repo", "selected_branch": "main", "initial_user_msg": WRITE_REQUEST}
    )
    channel.wait_for_agent_status(conversation_id, "finished")

    def command_and_output() -> tuple[dict[str, Any], dict[str, Any]] | None:
        events = channel.events(conversation_id)
        actions = [
            e for e in events if e["kind"] == "ActionEvent" and (e["event"] or {}).get("tool_name") == "terminal"
        ]
        if not actions:
            return None
        outputs = [e for e in events if e["kind"] == "ObservationEvent" and e["event"]["action_id"] == actions[0]["id"]]
        return (actions[0], outputs[0]) if outputs else None

    action, observation = channel.wait_until(command_and_output, "the command and its output")
    assert action["source"] == "agent" and action["event"]["action"]["command"] == WRITE_COMMAND
    assert observation["event"]["observation"]["exit_code"] == 0
    assert "hello-from-the-agent" in observation["event"]["observation"]["content"][0]["text"]

    files = channel.wait_until(lambda: workspace_files(channel, conversation_id).get("hello.txt"), "the workspace")
    assert files == {"path": "hello.txt", "status": "added", "additions": 1, "deletions": 0}
    workspace = channel.get(f"/conversations/{conversation_id}/workspace").json()
    assert workspace["branch"] == "main" and len(workspace["head_commit"]) == 40
    assert "+hello-from-the-agent" in workspace["diff"] and workspace["diff_truncated"] is False
    assert channel.model.wait_for_request(lambda r: r.last_user_text == WRITE_REQUEST, 1)


def test_a_second_message_reaches_the_model_once_and_the_transcript_is_complete(channel: Channel) -> None:
    conversation_id = channel.conversation("writer")
    response = channel.post(f"/conversations/{conversation_id}/messages", {"text": SECOND_MESSAGE})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "ok"

    channel.model.wait_for_request(lambda r: r.last_user_text == SECOND_MESSAGE, AGENT_TIMEOUT)
    channel.wait_until(lambda: SECOND_MESSAGE in user_texts(channel.events(conversation_id)), "the message event")
    channel.wait_until(
        lambda: any(
            e["kind"] == "ActionEvent" and e["event"]["action"].get("message") == "Goodbye!"
            for e in channel.events(conversation_id)
        ),
        "the agent's answer",
    )
    channel.wait_for_agent_status(conversation_id, "finished")

    # What the agent-server itself holds (read with its session key, as a person on this machine
    # could: from its process's environment) is all in the service, in order, each event once.
    view = channel.view(conversation_id)
    port = int(view["agent_server_url"].rsplit(":", 1)[1])
    pid = agent_server_pid(port)
    assert pid is not None
    session_key = environment_variable(pid, "SESSION_API_KEY")
    held: list[str] = []
    page_id = None
    while True:
        response = requests.get(
            f"{view['agent_server_url']}/api/conversations/{view['agent_conversation_id']}/events/search",
            params={"limit": 100, **({"page_id": page_id} if page_id else {})},
            headers={"X-Session-API-Key": session_key or ""},
            timeout=10,
        )
        page = response.json()
        held.extend(event["id"] for event in page["items"])
        page_id = page.get("next_page_id")
        if not page_id:
            break
    channel.wait_until(lambda: set(held) <= {e["id"] for e in channel.events(conversation_id)}, "every event")
    stored = channel.events(conversation_id)
    assert len({event["id"] for event in stored}) == len(stored)
    assert [event["id"] for event in stored if event["id"] in set(held)] == held
    assert user_texts(stored) == [WRITE_REQUEST, SECOND_MESSAGE]
    assert [r.last_user_text for r in channel.model.received()].count(SECOND_MESSAGE) >= 1
    assert channel.llm_key not in json.dumps(stored)
    assert "injected" not in json.dumps(stored)
    channel.remembered_events[conversation_id] = [event["id"] for event in stored]


def test_confirmation_mode_accept_runs_the_action_and_reject_does_not(channel: Channel) -> None:
    assert channel.post("/settings", {"confirmation_mode": True}).status_code == 200
    try:
        conversation_id = channel.create("confirming", {"initial_user_msg": "confirm-accept this one"})
    finally:
        channel.post("/settings", {"confirmation_mode": False})
    assert channel.view(conversation_id)["confirmation_mode"] is True
    channel.wait_for_agent_status(conversation_id, "waiting_for_confirmation")
    assert "accepted.txt" not in workspace_files(channel, conversation_id)

    response = channel.post(f"/conversations/{conversation_id}/confirm", {"accept": True})
    assert response.status_code == 202, response.text
    channel.wait_until(lambda: "accepted.txt" in workspace_files(channel, conversation_id), "the accepted command")
    channel.wait_for_agent_status(conversation_id, "finished")

    channel.post(f"/conversations/{conversation_id}/messages", {"text": "confirm-reject this one"})
    channel.wait_for_agent_status(conversation_id, "waiting_for_confirmation")
    response = channel.post(f"/conversations/{conversation_id}/confirm", {"accept": False, "reason": "not this"})
    assert response.status_code == 202, response.text
    rejection = channel.wait_until(
        lambda: [e for e in channel.events(conversation_id) if e["kind"] == "UserRejectObservation"], "the rejection"
    )
    assert rejection[0]["event"]["rejection_reason"] == "not this"
    channel.wait_until(lambda: channel.view(conversation_id)["agent_status"] != "waiting_for_confirmation", "a status")
    assert "rejected.txt" not in workspace_files(channel, conversation_id)
    nothing_pending = channel.post(f"/conversations/{conversation_id}/confirm", {"accept": True})
    assert nothing_pending.status_code == 409, nothing_pending.text
    assert nothing_pending.json()["status"] == "error" and nothing_pending.json()["msg_id"]


def test_events_outlive_stop_and_go_with_delete(channel: Channel) -> None:
    conversation_id = channel.conversation("writer")
    assert channel.post(f"/conversations/{conversation_id}/stop").status_code == 200
    channel.wait_until(lambda: channel.view(conversation_id)["conversation_status"] == "STOPPED", "STOPPED")
    after_stop = [event["id"] for event in channel.events(conversation_id)]
    remembered = channel.remembered_events.get(conversation_id, [])
    assert after_stop[: len(remembered)] == remembered and remembered
    refused = channel.post(f"/conversations/{conversation_id}/messages", {"text": "still there?"})
    assert refused.status_code == 409 and refused.json()["msg_id"]

    assert requests.delete(f"{channel.api}/conversations/{conversation_id}", timeout=30).status_code == 200
    gone = channel.get(f"/conversations/{conversation_id}/events")
    assert gone.status_code == 404, gone.text
    assert channel.get(f"/conversations/{conversation_id}/workspace").status_code == 404


def test_ctrl_c_leaves_nothing_running(channel: Channel) -> None:
    assert channel.stack.interrupt(timeout=90) == 0
    deadline = time.monotonic() + 10
    while processes_using(channel.stack.state_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_using(channel.stack.state_dir)
