"""The channel to a running conversation, sandbox side: the webhook relay, the inbox poller and
the workspace report, each against its real counterparts over HTTP (the control-plane double of
sandbox_harness, a recording agent-server double) and real git. The same parts with the real
agent-server are in test_sandbox_conversation.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from openhands_sandbox.control_plane import ControlPlaneClient
from openhands_sandbox.http_client import http_request, open_http
from openhands_sandbox.inbox import AgentConversation, InboxPoller
from openhands_sandbox.logs import Redactor
from openhands_sandbox.relay import EventRelay
from openhands_sandbox.workspace_report import GitRunner, workspace_report
from sandbox_harness import GIT_IDENTITY, ControlPlaneDouble, Secrets, control_plane, git, make_context

SESSION_KEY = "sess_" + uuid.uuid4().hex
AGENT_CONVERSATION = str(uuid.uuid4())
"""The one conversation each relay here serves (``serve_conversation``)."""
EVENTS = f"/events/{uuid.UUID(AGENT_CONVERSATION).hex}"


def client_for(plane: ControlPlaneDouble, token: str) -> ControlPlaneClient:
    return ControlPlaneClient(plane.url, token, Redactor([token]), backoff_seconds=0.01)


@pytest.fixture
def plane(conversation_id: str, sandbox_secrets: Secrets) -> Iterator[ControlPlaneDouble]:
    with control_plane(sandbox_secrets.token, make_context(conversation_id, sandbox_secrets, repository=None)) as p:
        yield p


def agent_event(index: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=index)),
        "timestamp": f"2026-12-01T10:00:{index // 100:02d}.{index % 100:06d}",
        "source": "agent",
        "kind": "ActionEvent",
        **extra,
    }


def status_event(index: int, status: str) -> dict[str, Any]:
    return agent_event(
        index, kind="ConversationStateUpdateEvent", source="environment", key="execution_status", value=status
    )


def post_to_relay(relay: EventRelay, path: str, body: Any, key: str = SESSION_KEY) -> int:
    request = http_request(
        relay.url + path,
        method="POST",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Session-API-Key": key},
    )
    try:
        with open_http(request, 10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


# --- the relay ------------------------------------------------------------------------------


def test_the_relay_forwards_every_event_in_order_through_failing_posts(
    plane: ControlPlaneDouble, sandbox_secrets: Secrets
) -> None:
    plane.fail_share = {"agent-events": 0.4, "agent-conversation": 0.4}
    published: list[tuple[str, int]] = []
    relay = EventRelay(
        client_for(plane, sandbox_secrets.token),
        SESSION_KEY,
        before_stopped_status=lambda status: published.append((status, len(plane.agent_events))),
        sleep=lambda seconds: False,
    )
    relay.serve_conversation(AGENT_CONVERSATION)
    relay.start()
    try:
        sent = [agent_event(i) for i in range(120)]
        sent[42] = status_event(42, "running")
        sent.append(status_event(120, "finished"))
        for start in range(0, len(sent), 4):
            assert post_to_relay(relay, EVENTS, sent[start : start + 4]) == 200
        assert relay.wait_until_forwarded(30)
    finally:
        relay.close(5)

    assert plane.failures["agent-events"] > 5  # the failures were real
    assert [e["id"] for e in plane.agent_transcript()] == [e["id"] for e in sent]
    assert plane.agent_event_arrivals == [e["id"] for e in sent]  # first arrivals in order too
    statuses = [info["execution_status"] for info in plane.agent_statuses]
    assert statuses[-1] == "finished"
    assert [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s] == ["running", "finished"]
    # The workspace was published before "finished" went out, after every event before it.
    assert published and published[-1] == ("finished", len(sent))


def test_what_the_relay_receives_before_forwarding_starts_waits_and_then_goes_in_order(
    plane: ControlPlaneDouble, sandbox_secrets: Secrets
) -> None:
    published: list[str] = []
    relay = EventRelay(client_for(plane, sandbox_secrets.token), SESSION_KEY, before_stopped_status=published.append)
    relay.serve_conversation(AGENT_CONVERSATION)
    relay.start_receiving()  # as the bootstrap does before the conversation exists
    try:
        first = [status_event(1, "idle"), agent_event(2)]
        assert post_to_relay(relay, EVENTS, first) == 200  # answered at once
        assert not relay.wait_until_forwarded(0.3)
        assert not plane.agent_events and not plane.agent_statuses and not published
        relay.start_forwarding()  # after `ready`
        assert post_to_relay(relay, EVENTS, [status_event(3, "running"), agent_event(4)]) == 200
        assert relay.wait_until_forwarded(10)
    finally:
        relay.close(5)
    assert [e["id"] for e in plane.agent_transcript()] == [str(uuid.UUID(int=index)) for index in range(1, 5)]
    assert [info["execution_status"] for info in plane.agent_statuses] == ["idle", "running"]


def test_no_workspace_report_for_a_status_already_left(plane: ControlPlaneDouble, sandbox_secrets: Secrets) -> None:
    published: list[str] = []
    relay = EventRelay(client_for(plane, sandbox_secrets.token), SESSION_KEY, before_stopped_status=published.append)
    relay.serve_conversation(AGENT_CONVERSATION)
    relay.start()
    try:
        # As the agent-server reports a new message: idle, the message, running, in one batch.
        post_to_relay(relay, EVENTS, [status_event(1, "idle"), agent_event(2), status_event(3, "running")])
        post_to_relay(relay, EVENTS, [agent_event(4), status_event(5, "finished")])
        assert relay.wait_until_forwarded(10)
    finally:
        relay.close(5)
    assert [info["execution_status"] for info in plane.agent_statuses] == ["idle", "running", "finished"]
    assert published == ["finished"]


def test_a_full_transcript_stops_the_events_and_not_the_statuses(
    plane: ControlPlaneDouble, sandbox_secrets: Secrets
) -> None:
    plane.event_limit = 3
    published: list[str] = []
    relay = EventRelay(client_for(plane, sandbox_secrets.token), SESSION_KEY, before_stopped_status=published.append)
    relay.serve_conversation(AGENT_CONVERSATION)
    relay.start()
    try:
        post_to_relay(relay, EVENTS, [agent_event(1), agent_event(2)])
        assert relay.wait_until_forwarded(10)
        post_to_relay(relay, EVENTS, [agent_event(3), agent_event(4), status_event(5, "finished")])
        post_to_relay(relay, EVENTS, [agent_event(6)])
        assert relay.wait_until_forwarded(10)
    finally:
        relay.close(5)
    assert len(plane.agent_events) == 2
    assert plane.calls["agent-events"] == 2  # no event was tried again, alone or later
    assert [info["execution_status"] for info in plane.agent_statuses] == ["finished"]
    assert published == ["finished"]


def test_the_relay_turns_away_posts_without_the_session_key(
    plane: ControlPlaneDouble, sandbox_secrets: Secrets
) -> None:
    relay = EventRelay(client_for(plane, sandbox_secrets.token), SESSION_KEY)
    relay.serve_conversation(AGENT_CONVERSATION)
    relay.start()
    try:
        assert post_to_relay(relay, EVENTS, [agent_event(1)], key="wrong") == 401
        assert post_to_relay(relay, EVENTS, [agent_event(1)], key="") == 401
        assert post_to_relay(relay, "/elsewhere", [agent_event(1)]) == 404
        assert relay.wait_until_forwarded(5)
    finally:
        relay.close(5)
    assert plane.agent_events == {}


def test_the_relay_drops_what_is_not_about_its_conversation(
    plane: ControlPlaneDouble, sandbox_secrets: Secrets
) -> None:
    """A pool sandbox's warm-up conversation posts before and after the assignment names the real
    one: answered (the agent-server does not retry), never forwarded, never the status."""
    relay = EventRelay(client_for(plane, sandbox_secrets.token), SESSION_KEY)
    relay.start()
    other = uuid.uuid4()
    try:
        assert post_to_relay(relay, f"/events/{other.hex}", [status_event(1, "error")]) == 200  # none named yet
        assert post_to_relay(relay, EVENTS, [agent_event(2)]) == 200  # nor this one, yet
        relay.serve_conversation(AGENT_CONVERSATION)
        assert post_to_relay(relay, f"/events/{other.hex}", [agent_event(3)]) == 200
        assert post_to_relay(relay, "/conversations", {"id": str(other), "execution_status": "deleting"}) == 200
        assert post_to_relay(relay, "/conversations", {"id": "not-a-uuid", "execution_status": "error"}) == 200
        assert post_to_relay(relay, EVENTS, [status_event(4, "running"), agent_event(5)]) == 200
        assert relay.wait_until_forwarded(10)
    finally:
        relay.close(5)
    assert relay.ignored_posts == 5
    assert sorted(plane.agent_events) == [str(uuid.UUID(int=4)), str(uuid.UUID(int=5))]
    assert [info["execution_status"] for info in plane.agent_statuses] == ["running"]


def test_conversation_info_never_moves_the_status_back(plane: ControlPlaneDouble, sandbox_secrets: Secrets) -> None:
    relay = EventRelay(client_for(plane, sandbox_secrets.token), SESSION_KEY)
    relay.serve_conversation(AGENT_CONVERSATION)
    relay.start()
    try:
        post_to_relay(relay, EVENTS, [status_event(1, "running")])
        # The agent-server's start notice, composed before the run began, arrives late.
        info = {
            "id": AGENT_CONVERSATION,
            "execution_status": "idle",
            "title": "T",
            "agent": {"llm": {"api_key": "sk-secret"}},
        }
        post_to_relay(relay, "/conversations", info)
        assert relay.wait_until_forwarded(10)
    finally:
        relay.close(5)
    assert [info["execution_status"] for info in plane.agent_statuses] == ["running", "running"]
    assert plane.agent_statuses[-1] == {
        "id": AGENT_CONVERSATION,
        "execution_status": "running",
        "title": "T",
    }  # no settings


def test_a_rejected_relay_stops_the_sandbox(plane: ControlPlaneDouble, sandbox_secrets: Secrets) -> None:
    rejected = threading.Event()
    relay = EventRelay(client_for(plane, "not-the-token"), SESSION_KEY, on_rejected=rejected.set)
    relay.serve_conversation(AGENT_CONVERSATION)
    relay.start()
    try:
        post_to_relay(relay, EVENTS, [agent_event(1)])
        assert rejected.wait(10)
    finally:
        relay.close(1)


# --- the inbox ------------------------------------------------------------------------------


class _AgentServerHandler(BaseHTTPRequestHandler):
    server: AgentServerDouble

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        double = self.server
        with double.lock:
            if path.endswith("/events/count"):
                self._answer(len(double.messages))
            elif path.endswith("/events/search"):
                newest = double.messages[-1:]
                self._answer({"items": [{"llm_message": {"content": [{"type": "text", "text": t}]}} for t in newest]})
            else:
                self._answer({"execution_status": double.status})

    def do_POST(self) -> None:
        double = self.server
        if self.headers.get("X-Session-API-Key") != SESSION_KEY:
            self._answer({"detail": "no"}, 401)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with double.lock:
            if self.path.endswith("/respond_to_confirmation"):
                double.confirmations.append(body)
                double.status = "running"
            else:
                assert body["run"] is True
                double.messages.append(body["content"][0]["text"])
            double.calls += 1
            lose_answer = double.calls % 3 == 0  # taken, but the answer never arrives
        if lose_answer:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._answer({"success": True})

    def _answer(self, body: Any, status: int = 200) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class AgentServerDouble(ThreadingHTTPServer):
    """The agent-server's message and confirmation endpoints, recording what they take."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _AgentServerHandler)
        self.lock = threading.Lock()
        self.messages: list[str] = []
        self.confirmations: list[dict[str, Any]] = []
        self.status = "waiting_for_confirmation"
        self.calls = 0


@pytest.fixture
def agent_double() -> Iterator[AgentServerDouble]:
    server = AgentServerDouble()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_inbox_delivers_every_item_once_in_order_through_failures(
    plane: ControlPlaneDouble, sandbox_secrets: Secrets, agent_double: AgentServerDouble
) -> None:
    plane.fail_share = {"inbox": 0.3, "ack": 0.4}
    rejected = threading.Event()
    poller = InboxPoller(
        client_for(plane, sandbox_secrets.token),
        AgentConversation(f"http://127.0.0.1:{agent_double.server_address[1]}", "conv", SESSION_KEY),
        on_rejected=rejected.set,
        wait_seconds=2,
        max_backoff_seconds=0.2,
    )
    confirmation = plane.push({"kind": "confirmation", "accept": True, "reason": "fine"})
    texts = [f"message {n}" for n in range(12)]
    poller.start()
    try:
        for text in texts[:6]:
            plane.push({"kind": "message", "text": text, "image_urls": []})
        time.sleep(0.3)
        for text in texts[6:]:
            plane.push({"kind": "message", "text": text, "image_urls": []})
        plane.wait_until(lambda: len(plane.acknowledged) == 13, 60, "every item acknowledged")
    finally:
        poller.stop()

    assert plane.failures.get("inbox", 0) > 0 and plane.failures.get("ack", 0) > 0
    assert agent_double.messages == texts  # each once, in order
    assert agent_double.confirmations == [{"accept": True, "reason": "fine"}]
    assert poller.handed_over[0] == confirmation
    assert not rejected.is_set()


def test_a_confirmation_with_nothing_pending_is_acknowledged_and_not_sent(
    plane: ControlPlaneDouble, sandbox_secrets: Secrets, agent_double: AgentServerDouble
) -> None:
    agent_double.status = "finished"
    poller = InboxPoller(
        client_for(plane, sandbox_secrets.token),
        AgentConversation(f"http://127.0.0.1:{agent_double.server_address[1]}", "conv", SESSION_KEY),
        on_rejected=lambda: None,
        wait_seconds=1,
    )
    plane.push({"kind": "confirmation", "accept": False, "reason": "no"})
    poller.start()
    try:
        plane.wait_until(lambda: len(plane.acknowledged) == 1, 20, "the ack")
    finally:
        poller.stop()
    assert agent_double.confirmations == []


def test_an_inbox_that_answers_401_ends_the_sandbox(plane: ControlPlaneDouble, agent_double: AgentServerDouble) -> None:
    rejected = threading.Event()
    poller = InboxPoller(
        client_for(plane, "not-the-token"),
        AgentConversation(f"http://127.0.0.1:{agent_double.server_address[1]}", "conv", SESSION_KEY),
        on_rejected=rejected.set,
        wait_seconds=1,
    )
    poller.start()
    try:
        assert rejected.wait(10)
    finally:
        poller.stop()


# --- the workspace report -------------------------------------------------------------------


def committed_repo(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    git("init", "-q", "-b", "main", str(repo), cwd=tmp_path)
    (repo / "a.txt").write_text("a\nb\n")
    (repo / "gone.txt").write_text("x\n")
    (repo / ".gitignore").write_text("*.log\n")
    git("add", "-A", cwd=repo)
    git(*GIT_IDENTITY, "commit", "-q", "-m", "start", cwd=repo)
    return repo, git("rev-parse", "HEAD", cwd=repo)


def objects_and_index(repo: Path) -> tuple[list[str], bytes]:
    objects = sorted(str(p.relative_to(repo)) for p in (repo / ".git" / "objects").rglob("*") if p.is_file())
    return objects, (repo / ".git" / "index").read_bytes()


def test_the_report_holds_committed_uncommitted_and_untracked_changes_and_writes_nothing(tmp_path: Path) -> None:
    repo, start = committed_repo(tmp_path)
    (repo / "a.txt").write_text("a\nB\nc\n")
    (repo / "gone.txt").unlink()
    (repo / "docs").mkdir()
    (repo / "docs" / "new.md").write_text("one\ntwo\nthree\n")
    (repo / "debug.log").write_text("ignored\n")
    (repo / "blob.bin").write_bytes(b"\x00\x01\x02")
    (repo / "committed.txt").write_text("later\n")
    git("add", "committed.txt", cwd=repo)
    git(*GIT_IDENTITY, "commit", "-q", "-m", "agent work", cwd=repo)
    before = objects_and_index(repo)

    report = workspace_report(repo, start, GitRunner(env=dict(os.environ)))

    assert objects_and_index(repo) == before
    assert report.branch == "main"
    assert report.head_commit == git("rev-parse", "HEAD", cwd=repo) != start
    assert {f.path: (f.status, f.additions, f.deletions) for f in report.files} == {
        "a.txt": ("modified", 2, 1),
        "gone.txt": ("deleted", 0, 1),
        "docs/new.md": ("added", 3, 0),
        "blob.bin": ("added", 0, 0),
        "committed.txt": ("added", 1, 0),
    }
    assert "+++ b/docs/new.md\n@@ -0,0 +1,3 @@\n+one\n+two\n+three\n" in report.diff
    assert "debug.log" not in report.diff
    assert report.diff_truncated is False


def test_a_big_diff_is_cut_at_a_line_and_flagged(tmp_path: Path) -> None:
    repo, start = committed_repo(tmp_path)
    (repo / "big.txt").write_text("".join(f"line {n}\n" for n in range(5000)))
    report = workspace_report(repo, start, GitRunner(env=dict(os.environ)), diff_cap_bytes=4096)
    assert report.diff_truncated is True
    assert len(report.diff.encode()) <= 4096 and report.diff.endswith("\n")
    assert report.files[0].additions == 5000  # line counts stay whole


def test_a_repository_without_commits_is_compared_with_the_empty_tree(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    git("init", "-q", "-b", "main", str(repo), cwd=tmp_path)
    (repo / "hello.txt").write_text("hello\n")
    report = workspace_report(repo, None, GitRunner(env=dict(os.environ)))
    assert (report.branch, report.head_commit) == ("main", None)
    assert [(f.path, f.status, f.additions) for f in report.files] == [("hello.txt", "added", 1)]


def test_the_repository_config_cannot_make_the_report_run_its_programs(tmp_path: Path) -> None:
    repo, start = committed_repo(tmp_path)
    marker = tmp_path / "ran"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho ran >> {marker}\ncat\n")
    hook.chmod(0o755)
    git("config", "core.fsmonitor", str(hook), cwd=repo)
    git("config", "diff.external", str(hook), cwd=repo)
    git("config", "diff.evil.textconv", str(hook), cwd=repo)
    git("config", "core.pager", str(hook), cwd=repo)
    (repo / ".gitattributes").write_text("*.txt diff=evil\n")
    (repo / "a.txt").write_text("changed\n")
    report = workspace_report(repo, start, GitRunner(env=dict(os.environ)))
    assert not marker.exists()
    assert "+changed" in report.diff


@pytest.mark.skipif(os.geteuid() != 0, reason="running git as another user needs root")
def test_as_root_the_report_runs_as_the_workspace_user_and_leaves_nothing(tmp_path: Path) -> None:
    nobody = 65534
    outside = Path(tempfile.mkdtemp(prefix="oh-report-test-", dir="/tmp"))  # a path nobody can reach
    try:
        outside.chmod(0o755)
        repo, start = committed_repo(outside)
        (repo / "new.txt").write_text("by the agent\n")
        user_tmp = outside / "agent-tmp"
        user_tmp.mkdir()
        subprocess.run(["chown", "-R", f"{nobody}:{nobody}", str(repo), str(user_tmp)], check=True)
        runner = GitRunner(
            env={"PATH": os.environ["PATH"], "HOME": str(user_tmp), "TMPDIR": str(user_tmp)}, user=nobody
        )

        report = workspace_report(repo, start, runner)

        assert [(f.path, f.status) for f in report.files] == [("new.txt", "added")]
        assert list(user_tmp.iterdir()) == []  # its scratch directory is gone
        owners = {path.stat().st_uid for path in (repo / ".git").rglob("*")}
        assert owners == {nobody}  # nothing in the repository became root's
    finally:
        shutil.rmtree(outside, ignore_errors=True)
