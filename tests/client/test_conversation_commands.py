"""`convo send`, `events [--follow]`, `confirm`, `diff` and `chat` against the fake API; `chat` in a real
terminal (tmux), as a person uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.client.conftest import CLIENT_SOURCE, RunConvo, installed_convo
from tests.client.fake_api import FakeConversationsApi
from tests.client.tmux_pane import command_in_terminal

CONVO_MODULE = (sys.executable, "-m", "openhands_conversations_client")  # this worktree's client (PYTHONPATH)


def running_conversation(fake_api: FakeConversationsApi) -> str:
    conversation_id = fake_api.add_conversation(status="RUNNING", title="Fix the tests")
    return conversation_id


def transcript(fake_api: FakeConversationsApi, conversation_id: str) -> None:
    """A first message, a command with its output, the finish, and the status changes."""
    fake_api.add_agent_event(
        conversation_id,
        "MessageEvent",
        "user",
        llm_message={"role": "user", "content": [{"type": "text", "text": "Write the file"}]},
    )
    fake_api.add_agent_event(
        conversation_id, "ConversationStateUpdateEvent", "environment", key="execution_status", value="running"
    )
    fake_api.add_agent_event(
        conversation_id, "ConversationStateUpdateEvent", "environment", key="stats", value={"tokens": 3}
    )
    fake_api.add_agent_event(
        conversation_id,
        "ActionEvent",
        "agent",
        tool_name="terminal",
        thought=[{"type": "text", "text": "I will write it."}],
        action={"kind": "TerminalAction", "command": "echo hi > hi.txt && cat hi.txt"},
    )
    fake_api.add_agent_event(
        conversation_id,
        "ObservationEvent",
        "environment",
        tool_name="terminal",
        observation={"kind": "TerminalObservation", "content": [{"type": "text", "text": "hi"}], "exit_code": 0},
    )
    fake_api.add_agent_event(
        conversation_id, "ActionEvent", "agent", tool_name="finish", action={"kind": "FinishAction", "message": "Done"}
    )
    fake_api.add_agent_event(
        conversation_id,
        "ObservationEvent",
        "environment",
        tool_name="finish",
        observation={"kind": "FinishObservation", "content": [{"type": "text", "text": "Done"}]},
    )
    fake_api.add_agent_event(
        conversation_id, "ConversationStateUpdateEvent", "environment", key="execution_status", value="finished"
    )


def without_clock(lines: list[str]) -> list[str]:
    """Each line starts with the event's `HH:MM:SS ` (or as many spaces for its next lines)."""
    return [line[9:] for line in lines]


# -- send ------------------------------------------------------------------------------------------
def test_send_queues_the_message_and_says_how_to_see_the_answer(
    convo: RunConvo, fake_api: FakeConversationsApi
) -> None:
    conversation_id = running_conversation(fake_api)
    result = convo("send", conversation_id, "Now add a test", "--image", "https://example.com/a.png")

    assert result.code == 0, result.stderr
    (message,) = fake_api.messages[conversation_id]
    assert message["text"] == "Now add a test" and message["image_urls"] == ["https://example.com/a.png"]
    assert result.stdout == (
        f"sent {message['message_id']}; the agent's answer: convo events {conversation_id} --follow\n"
    )


def test_send_reads_standard_input_and_passes_the_idempotency_key(
    convo: RunConvo, fake_api: FakeConversationsApi
) -> None:
    conversation_id = running_conversation(fake_api)
    result = convo("send", conversation_id, "-", "--idempotency-key", "k-1", "--json", stdin="line one\nline two\n")

    assert result.code == 0
    assert fake_api.messages[conversation_id][0]["text"] == "line one\nline two"
    (request,) = fake_api.requests_to("POST", f"/api/conversations/{conversation_id}/messages")
    assert request.headers["idempotency-key"] == "k-1"
    assert result.json()["status"] == "ok"


def test_send_to_a_stopped_conversation_shows_the_services_error(
    convo: RunConvo, fake_api: FakeConversationsApi
) -> None:
    conversation_id = fake_api.add_conversation(status="STOPPED")
    result = convo("send", conversation_id, "hello")
    assert result.code == 3
    assert result.stderr == "convo: CONVERSATION$NOT_RUNNING (HTTP 409): The conversation is not running\n"


# -- events ----------------------------------------------------------------------------------------
def test_events_render_messages_commands_output_and_statuses(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    conversation_id = running_conversation(fake_api)
    transcript(fake_api, conversation_id)
    result = convo("events", conversation_id)

    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line[:8].count(":") == 2 or line.startswith(" " * 9) for line in lines)
    assert without_clock(lines) == [
        "you: Write the file",
        "-- agent running",
        "agent thinks: I will write it.",
        "$ echo hi > hi.txt && cat hi.txt",
        "  | hi",
        "  | (exit 0)",
        "agent finished: Done",
        "-- agent finished",
    ]


def test_events_json_prints_one_envelope_a_line_across_pages(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    conversation_id = running_conversation(fake_api)
    for number in range(130):
        fake_api.add_agent_event(
            conversation_id,
            "MessageEvent",
            "agent",
            llm_message={"role": "assistant", "content": [{"type": "text", "text": f"n{number}"}]},
        )
    result = convo("events", conversation_id, "--json")

    envelopes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"]["llm_message"]["content"][0]["text"] for e in envelopes] == [f"n{n}" for n in range(130)]
    assert set(envelopes[0]) == {"id", "timestamp", "source", "kind", "event"}
    pages = fake_api.requests_to("GET", f"/api/conversations/{conversation_id}/events")
    assert [request.query.get("page_id") for request in pages] == [None, ["100"], ["130"]]


def test_events_follow_shows_new_events_as_they_come(fake_api: FakeConversationsApi) -> None:
    conversation_id = running_conversation(fake_api)
    transcript(fake_api, conversation_id)
    process = subprocess.Popen(
        [*CONVO_MODULE, "--endpoint", fake_api.url, "events", conversation_id, "--follow"],
        env={"PYTHONPATH": str(CLIENT_SOURCE), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        seen = [process.stdout.readline() for _ in range(8)]
        assert seen[-1].endswith("-- agent finished\n")
        time.sleep(0.3)  # it now waits in a long poll
        fake_api.add_agent_event(
            conversation_id,
            "MessageEvent",
            "user",
            llm_message={"role": "user", "content": [{"type": "text", "text": "one more thing"}]},
        )
        assert process.stdout.readline().endswith(" you: one more thing\n")
        waits = [
            r.query.get("wait") for r in fake_api.requests_to("GET", f"/api/conversations/{conversation_id}/events")
        ]
        assert waits[-1] == ["20"]
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- confirm and diff ------------------------------------------------------------------------------
@pytest.mark.parametrize(("flag", "accept"), [("--accept", True), ("--reject", False)])
def test_confirm_sends_the_answer(convo: RunConvo, fake_api: FakeConversationsApi, flag: str, accept: bool) -> None:
    conversation_id = running_conversation(fake_api)
    result = convo("confirm", conversation_id, flag, "--reason", "checked")

    assert result.code == 0, result.stderr
    (answer,) = fake_api.messages[conversation_id]
    assert (answer["action"], answer["accept"], answer["reason"]) == ("confirm", accept, "checked")
    assert result.stdout.startswith("accepted: the agent runs" if accept else "rejected: the pending action is not run")


def test_confirm_needs_exactly_one_answer(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    conversation_id = running_conversation(fake_api)
    assert convo("confirm", conversation_id).code == 2
    assert convo("confirm", conversation_id, "--accept", "--reject").code == 2
    assert conversation_id not in fake_api.messages


WORKSPACE: dict[str, Any] = {
    "branch": "openhands-workspace-ab12cd",
    "head_commit": "0123456789abcdef0123456789abcdef01234567",
    "files": [
        {"path": "hi.txt", "status": "added", "additions": 1, "deletions": 0},
        {"path": "README.md", "status": "modified", "additions": 2, "deletions": 1},
    ],
    "diff": "diff --git a/hi.txt b/hi.txt\nnew file mode 100644\n--- /dev/null\n+++ b/hi.txt\n@@ -0,0 +1 @@\n+hi\n",
    "diff_truncated": False,
    "published_at": "2026-12-01T10:00:00.000Z",
}


def test_diff_shows_the_files_then_the_unified_diff(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    conversation_id = running_conversation(fake_api)
    fake_api.workspaces[conversation_id] = WORKSPACE
    result = convo("diff", conversation_id)

    assert result.code == 0, result.stderr
    assert result.stdout == (
        "branch openhands-workspace-ab12cd @ 0123456789ab, 2 files changed\n"
        "  A  hi.txt  +1 -0\n"
        "  M  README.md  +2 -1\n"
        "\n" + WORKSPACE["diff"]
    )
    assert convo("diff", conversation_id, "--patch").stdout == WORKSPACE["diff"]
    assert convo("diff", conversation_id, "--json").json() == WORKSPACE


def test_a_truncated_diff_is_said_so(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    conversation_id = running_conversation(fake_api)
    fake_api.workspaces[conversation_id] = {**WORKSPACE, "diff_truncated": True}
    result = convo("diff", conversation_id, "--patch")
    assert "the diff was cut at the service's size cap" in result.stderr


# -- chat in a real terminal -----------------------------------------------------------------------
def test_chat_streams_events_and_sends_what_is_typed() -> None:
    with FakeConversationsApi().running() as fake:
        conversation_id = running_conversation(fake)
        transcript(fake, conversation_id)
        argv = [str(installed_convo()), "--endpoint", fake.url, "chat", conversation_id]
        with command_in_terminal(argv, {"PYTHONPATH": str(CLIENT_SOURCE)}) as pane:
            screen = pane.wait_for(lambda text: "-- agent finished" in text, "the transcript")
            assert f"chat with {conversation_id} Fix the tests (RUNNING)" in screen
            assert "$ echo hi > hi.txt && cat hi.txt" in screen and "  | hi" in screen

            pane.type_line("please add a test too")
            deadline = time.monotonic() + 10
            while not fake.messages.get(conversation_id):
                assert time.monotonic() < deadline, "the typed message never reached the API"
                time.sleep(0.05)
            assert fake.messages[conversation_id][0]["text"] == "please add a test too"

            # The agent's events stream in while the person is typing the next line.
            pane.type_text("half a li")
            fake.add_agent_event(
                conversation_id,
                "ConversationStateUpdateEvent",
                "environment",
                key="execution_status",
                value="waiting_for_confirmation",
            )
            screen = pane.wait_for(lambda text: "-- agent waiting for confirmation" in text, "the new status")
            assert "/accept or /reject [reason]" in screen
            assert screen.rstrip().endswith("> half a li"), screen
            pane.type_line("ne")
            pane.type_line("/reject not now")
            deadline = time.monotonic() + 10
            while len(fake.messages[conversation_id]) < 3:
                assert time.monotonic() < deadline, f"got {fake.messages[conversation_id]}"
                time.sleep(0.05)
            assert [m["action"] for m in fake.messages[conversation_id]] == ["messages", "messages", "confirm"]
            assert fake.messages[conversation_id][1]["text"] == "half a line"
            assert fake.messages[conversation_id][2]["accept"] is False
            pane.type_line("/quit")
            assert pane.exit_code() == 0


def test_chat_reads_lines_from_a_pipe_too(fake_api: FakeConversationsApi) -> None:
    conversation_id = running_conversation(fake_api)
    completed = subprocess.run(
        [*CONVO_MODULE, "--endpoint", fake_api.url, "chat", conversation_id],
        input="first\n/accept\n",
        env={"PYTHONPATH": str(CLIENT_SOURCE), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert [(m["action"], m.get("text"), m.get("accept")) for m in fake_api.messages[conversation_id]] == [
        ("messages", "first", None),
        ("confirm", None, True),
    ]
