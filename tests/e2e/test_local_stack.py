"""End to end over HTTP: `python -m devstack` runs the service; the spec's own examples drive it,
then the lifecycle: an event-created conversation, stop, the concurrency limit, delete, Ctrl-C.

One stack for the module (booting it and starting sandboxes is the slow part), and the tests run
in file order (not under pytest-xdist's `--dist load`), each building on the one before; the
last one (Ctrl-C) ends the stack:

1. the spec's minimal and full examples + a repository whose setup script fails: each followed to
   RUNNING / ERROR, with the workspace, the setup script, the git hook and the agent-server checked;
2. a `CreateConversation` event put on the stack's bus (EventBridge -> rule -> SQS -> the intake
   function) becomes a RUNNING conversation of the local user, and its status changes are
   published on the bus;
3. `POST .../stop` on a RUNNING conversation: its sandbox and agent-server end, its slot is freed;
4. at the local user's limit (3), a 4th creation closes the least recently active conversation,
   whose sandbox ends;
5. `DELETE` removes a stopped and a running conversation (GET -> 404), ending the running one's
   sandbox;
6. a sandbox that dies (SIGKILL) ends its conversation: ECS's task state change reaches the
   template's SandboxWatchFunction (skipped while the template has none);
7. SIGINT -> nothing the stack started is still running.

The agent-server's session key is never handed out by the service (the sandbox gets it once,
with the context). The test reads it where a person on this machine could: the agent-server
process's own environment (/proc/<pid>/environ, same user).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from devstack.template_resources import load_template
from tests.e2e.local_stack import (
    AGENT_PYTHON,
    ProcessIdentity,
    RunningStack,
    agent_server_pid,
    descendants,
    environment_variable,
    free_port,
    identify,
    processes_using,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

# The spec lives in ../shared beside the checkout (as CI lays it out); CONVERSATION_SPEC overrides.
_SPEC_NAME = "seed/000_704a750d1b4bbd08.txt"
_SPEC_CANDIDATES = [Path(__file__).resolve().parents[3] / "shared" / _SPEC_NAME, Path("/work/shared") / _SPEC_NAME]
SPEC_PATH = Path(
    os.environ.get("CONVERSATION_SPEC")
    or next((path for path in _SPEC_CANDIDATES if path.exists()), _SPEC_CANDIDATES[0])
)
SPEC_BASE_URL = "http://localhost:3000"
BOOT_TIMEOUT = 90.0
RUNNING_TIMEOUT = 180.0
SHUTDOWN_TIMEOUT = 60.0
LEFTOVER_GRACE = 5.0
# A stopped, closed or deleted conversation's sandbox: the stream consumer stops the task, local
# Fargate sees it within 0.25 s and SIGTERMs it; the agent-server exits in a few seconds.
SANDBOX_GONE_TIMEOUT = 15.0
LOCAL_USER = "local-user"
TRUSTED_SOURCE = "openhands.integrations"
CONVERSATION_ID = re.compile(r"^[0-9a-f]{32}$")
EVERY_PHASE = [
    "STATUS$QUEUED",
    "STATUS$INITIALIZING_CONTEXT",
    "STATUS$STARTING_RUNTIME",
    "STATUS$RUNTIME_STARTED",
    "STATUS$SETTING_UP_WORKSPACE",
    "STATUS$RUNNING_SETUP_SCRIPT",
    "STATUS$SETTING_UP_GIT_HOOKS",
    "STATUS$STARTING_AGENT_SERVER",
    "STATUS$READY",
]


@dataclass
class Created:
    label: str
    request: dict[str, Any]
    conversation_id: str
    posted_at: float
    stdout: str = ""
    view: dict[str, Any] | None = None
    seconds_to_end: float | None = None


def spec_example(title: str) -> str:
    """The Python code block under `### <title>` in the spec."""
    text = SPEC_PATH.read_text(encoding="utf-8")
    start = text.index(f"### {title}")
    block = re.search(r"```python\n(.*?)```", text[start:], re.DOTALL)
    assert block, f"no python block under {title!r} in {SPEC_PATH}"
    return block.group(1)


def run_spec_example(title: str, base_url: str) -> tuple[Any, str, dict[str, Any]]:
    """Run the example unchanged except for its base URL; returns (response, its stdout, body)."""
    code = spec_example(title)
    assert SPEC_BASE_URL in code
    stdout = io.StringIO()
    namespace: dict[str, Any] = {"__name__": "spec_example"}
    with contextlib.redirect_stdout(stdout):
        exec(code.replace(SPEC_BASE_URL, base_url), namespace)  # noqa: S102 - the spec's own example
    response = namespace["response"]
    return response, stdout.getvalue(), json.loads(response.request.body)


def git(workspace: Path, *args: str) -> str:
    # safe.directory: run as root, the sandbox hands its workspace to an agent user of its own.
    return subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=workspace, check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


def sandbox_of(state_dir: Path, conversation_id: str) -> dict[str, Any]:
    for task_file in sorted((state_dir / "sandboxes").glob("*/task.json")):
        task = json.loads(task_file.read_text())
        if task["conversation_id"] == conversation_id:
            return dict(task)
    raise AssertionError(f"no sandbox was started for {conversation_id}")


@dataclass
class Journey:
    """What the tests of this module share: the stack, what they created, what it ran."""

    stack: RunningStack
    aws: boto3.Session
    endpoint_url: str
    bus: str
    observer_url: str = ""
    conversations: dict[str, Created] = field(default_factory=dict)  # label -> created
    processes: set[ProcessIdentity] = field(default_factory=set)
    published: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    def client(self, service: str) -> Any:
        return self.aws.client(service, endpoint_url=self.endpoint_url)

    def created(self, label: str) -> Created:
        if label not in self.conversations:
            pytest.skip(f"needs the {label!r} conversation of an earlier test")
        return self.conversations[label]

    def remember_processes(self) -> None:
        self.processes |= started_processes(self.stack)


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journey]:
    if not SPEC_PATH.exists():
        pytest.skip(f"the spec is not at {SPEC_PATH} (set CONVERSATION_SPEC)")
    if not AGENT_PYTHON.exists():
        pytest.skip(f"{AGENT_PYTHON} is missing: the sandboxes need openhands-agent-server")
    stack = RunningStack.start(tmp_path_factory.mktemp("devstack") / "state", free_port())
    try:
        match = stack.wait_for_line(r"devstack ready: (http://127\.0\.0\.1:\d+)/api", BOOT_TIMEOUT)
        stack.base_url = match.group(1)
        endpoint = stack.wait_for_line(r"AWS \(moto\)\s+(http://127\.0\.0\.1:\d+)", 1).group(1)
        bus = stack.wait_for_line(r"events\s+bus (\S+)", 1).group(1)
        # Fake credentials for the stack's moto, whatever this process's environment holds.
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
        journey = Journey(stack, session, endpoint, bus)
        journey.observer_url = observe_status_changes(journey)
        yield journey
    finally:
        stack.kill_everything()


def observe_status_changes(journey: Journey) -> str:
    """A queue subscribed to the service's ConversationStatusChanged events on the stack's bus."""
    sqs, events = journey.client("sqs"), journey.client("events")
    url = sqs.create_queue(QueueName="e2e-status-observer")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": ["openhands.conversations"], "detail-type": ["ConversationStatusChanged"]}
    events.put_rule(Name="e2e-observer", EventBusName=journey.bus, EventPattern=json.dumps(pattern))
    events.put_targets(Rule="e2e-observer", EventBusName=journey.bus, Targets=[{"Id": "observer", "Arn": arn}])
    return str(url)


def published_changes(journey: Journey, conversation_id: str) -> list[dict[str, Any]]:
    """The ConversationStatusChanged details published so far for one conversation, in order,
    each once (delivery is at least once: deduplicated on `change_id`, as docs/events.md says)."""
    sqs = journey.client("sqs")
    while messages := sqs.receive_message(QueueUrl=journey.observer_url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            journey.published.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=journey.observer_url, ReceiptHandle=message["ReceiptHandle"])
    details = {
        event["detail"]["change_id"]: event["detail"]
        for event in journey.published
        if event["detail"]["conversation_id"] == conversation_id
    }
    return sorted(details.values(), key=lambda detail: str(detail["changed_at"]))


@contextlib.contextmanager
def explained(stack: RunningStack) -> Iterator[None]:
    """On a failed check, the stack's console (its last lines) goes with the failure."""
    try:
        yield
    except AssertionError:
        print("\n".join(stack.lines[-200:]))
        raise


def follow(base_url: str, conversations: list[Created]) -> None:
    """GET each conversation until it is RUNNING or ERROR (or time runs out)."""
    deadline = time.monotonic() + RUNNING_TIMEOUT
    pending = list(conversations)
    while pending and time.monotonic() < deadline:
        for created in list(pending):
            response = requests.get(f"{base_url}/api/conversations/{created.conversation_id}", timeout=10)
            assert response.status_code == 200, response.text
            view = response.json()
            created.view = view
            if view["conversation_status"] in {"RUNNING", "ERROR", "STOPPED"}:
                created.seconds_to_end = time.monotonic() - created.posted_at
                pending.remove(created)
        time.sleep(0.25)


def describe(created: Created) -> str:
    view = created.view or {}
    keys = ("conversation_status", "runtime_status", "error_code", "error_message", "error_details", "timeline")
    return f"{created.label}: " + json.dumps({key: view.get(key) for key in keys}, ensure_ascii=False)


def check_running(stack: RunningStack, created: Created) -> None:
    view = created.view
    assert view is not None and view["conversation_status"] == "RUNNING", describe(created)
    assert view["runtime_status"] == "STATUS$READY"
    assert [entry["phase"] for entry in view["timeline"]] == EVERY_PHASE, describe(created)
    assert view["microagents"] == ["repo"]

    # The workspace: the repository at the selected branch and the commit checked at POST time.
    sandbox = sandbox_of(stack.state_dir, created.conversation_id)
    workspace = Path(sandbox["workspace_root"]) / "repo"
    bare = stack.state_dir / "repos" / "user" / "repo.git"
    branch = view["selected_branch"]
    assert branch == created.request.get("selected_branch", "main")
    assert view["commit"] == git(bare, "rev-parse", f"refs/heads/{branch}")
    assert git(workspace, "rev-parse", "HEAD") == view["commit"]
    checked_out = git(workspace, "rev-parse", "--abbrev-ref", "HEAD")
    # docs/sandbox-protocol.md: with no branch requested the sandbox may work on its own
    # `openhands-workspace-…` branch, created at the same commit.
    assert checked_out == branch or (
        "selected_branch" not in created.request and checked_out.startswith("openhands-workspace-")
    ), checked_out

    # The setup script ran (in the workspace, on that branch and commit).
    marker = workspace / ".openhands_setup_done"
    assert marker.exists(), f"{marker} is missing: the setup script did not run"
    assert marker.read_text().strip() == f"setup.sh ran on branch {checked_out} at commit {view['commit']}"

    # The pre-commit hook is installed and runs the repository's .openhands/pre-commit.sh.
    hook = workspace / ".git" / "hooks" / "pre-commit"
    assert hook.exists() and os.access(hook, os.X_OK), f"{hook} is not installed"
    as_root = {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}
    ran = subprocess.run([str(hook)], cwd=workspace, env=as_root, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0 and "pre-commit: every shell script parses" in ran.stdout, ran.stdout + ran.stderr

    # The agent-server holds the conversation, with the first message when there is one.
    url = view["agent_server_url"]
    port = int(url.rsplit(":", 1)[1])
    assert requests.get(f"{url}/ready", timeout=5).status_code == 200
    pid = agent_server_pid(port)
    assert pid is not None, f"no agent-server process listens on port {port}"
    session_key = environment_variable(pid, "SESSION_API_KEY")
    assert session_key, "the agent-server has no SESSION_API_KEY"
    # The task got its token sealed (it opened it with its own credentials endpoint and moto's
    # KMS), and the agent-server got neither the token nor the task's way to its AWS identity.
    bootstrap = int(sandbox["pid"])
    assert environment_variable(bootstrap, "SANDBOX_TOKEN_CIPHERTEXT"), "the task was not given a sealed token"
    assert environment_variable(bootstrap, "SANDBOX_TOKEN") is None, "the task was given its token in clear"
    for name in (
        "SANDBOX_TOKEN",
        "SANDBOX_TOKEN_CIPHERTEXT",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_ENDPOINT_URL_KMS",
    ):
        assert environment_variable(pid, name) is None, f"the agent-server inherited {name}"
    agent_conversation = f"{url}/api/conversations/{view['agent_conversation_id']}"
    assert requests.get(agent_conversation, timeout=10).status_code == 401  # the key is required
    headers = {"X-Session-API-Key": session_key}
    answer = requests.get(agent_conversation, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert Path(answer.json()["workspace"]["working_dir"]).resolve() == workspace.resolve()
    events = requests.get(f"{agent_conversation}/events/search", headers=headers, params={"limit": 100}, timeout=10)
    assert events.status_code == 200, events.text
    user_messages = [
        event["llm_message"]["content"]
        for event in events.json()["items"]
        if event.get("kind") == "MessageEvent" and event.get("source") == "user"
    ]
    expected_text = created.request.get("initial_user_msg")
    if expected_text is None:
        assert user_messages == []
    else:
        assert user_messages, "the agent-server has no user message"
        first = user_messages[0]
        assert [item.get("text") for item in first if item.get("type") == "text"] == [expected_text]
        images = [url for item in first if item.get("type") == "image" for url in item.get("image_urls", [])]
        assert images == created.request.get("image_urls", [])


def check_broken_setup(stack: RunningStack, created: Created) -> None:
    view = created.view
    assert view is not None and view["conversation_status"] == "ERROR", describe(created)
    assert view["error_code"] == "SETUP_SCRIPT_FAILED", describe(created)
    details = view["error_details"] or {}
    assert details.get("exit_code") == 3, describe(created)
    assert "toolchain 9.9 is not available" in details.get("output_tail", ""), describe(created)
    phases = [entry["phase"] for entry in view["timeline"]]
    assert "STATUS$RUNNING_SETUP_SCRIPT" in phases and "STATUS$STARTING_AGENT_SERVER" not in phases, phases
    # Its sandbox ends (the task is stopped) shortly after.
    deadline = time.monotonic() + 30
    while "exit_code" not in sandbox_of(stack.state_dir, created.conversation_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "exit_code" in sandbox_of(stack.state_dir, created.conversation_id), "the failed sandbox still runs"


def check_api_gateway(stack: RunningStack) -> None:
    """The authorizer path (an issued key, a wrong key) and the documentation routes."""
    settings = f"{stack.base_url}/api/settings"
    api_key = (stack.state_dir / "local-api-key").read_text().strip()
    with_key = requests.get(settings, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert with_key.status_code == 200 and with_key.json()["llm_api_key_set"] is True, with_key.text
    assert with_key.json()["llm_model"] == "openai/placeholder-model-set-LLM_MODEL"
    wrong = requests.get(settings, headers={"Authorization": "Bearer not-a-key"}, timeout=10)
    assert wrong.status_code == 401, wrong.text
    assert wrong.json() == {"status": "error", "message": "Missing or invalid API key", "msg_id": "ERROR$UNAUTHORIZED"}
    docs = requests.get(f"{stack.base_url}/api/docs", timeout=10)
    assert docs.status_code == 200 and "text/html" in docs.headers["Content-Type"]
    openapi = requests.get(f"{stack.base_url}/api/openapi.json", timeout=10)
    assert openapi.status_code == 200 and "/api/conversations" in openapi.json()["paths"]


def started_processes(stack: RunningStack) -> set[ProcessIdentity]:
    """Everything the stack runs: its process tree, plus what left the tree (tmux servers)."""
    return identify(descendants(stack.process.pid) | processes_using(stack.state_dir))


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """On the terminal even without -s (timings are reported, not asserted)."""
    with capsys.disabled():
        print(line)


def view_of(journey: Journey, conversation_id: str) -> dict[str, Any]:
    response = requests.get(f"{journey.base_url}/api/conversations/{conversation_id}", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def quota(journey: Journey) -> dict[str, Any]:
    response = requests.get(f"{journey.base_url}/api/quota", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def create(journey: Journey, label: str, request: dict[str, Any]) -> Created:
    posted_at = time.monotonic()
    response = requests.post(f"{journey.base_url}/api/conversations", json=request, timeout=30)
    assert response.status_code == 200, response.text
    created = Created(label, request, response.json()["conversation_id"], posted_at)
    journey.conversations[label] = created
    return created


def sandbox_processes(journey: Journey, created: Created) -> set[ProcessIdentity]:
    """A RUNNING conversation's sandbox (the bootstrap) and its agent-server, as live processes."""
    view = view_of(journey, created.conversation_id)
    assert view["conversation_status"] == "RUNNING", describe(created)
    sandbox = sandbox_of(journey.stack.state_dir, created.conversation_id)
    agent_server = agent_server_pid(int(view["agent_server_url"].rsplit(":", 1)[1]))
    assert agent_server is not None, f"{created.label}: no agent-server process"
    processes = identify([int(sandbox["pid"]), agent_server])
    assert len(processes) == 2, f"{created.label}: sandbox or agent-server not running: {processes}"
    return processes


def wait_gone(processes: set[ProcessIdentity], what: str) -> float:
    """Seconds until none of `processes` is alive (fails after SANDBOX_GONE_TIMEOUT)."""
    started = time.monotonic()
    wait_until(
        lambda: not any(process.is_alive() for process in processes),
        SANDBOX_GONE_TIMEOUT,
        f"{what}: still running: " + ", ".join(f"{p.pid} {p.command[:80]}" for p in processes if p.is_alive()),
        interval=0.1,
    )
    return time.monotonic() - started


def test_the_spec_examples_reach_running(journey: Journey, capsys: pytest.CaptureFixture[str]) -> None:
    stack = journey.stack
    created: list[Created] = []

    for label, title in (("minimal", "最小化配置示例"), ("full", "完整配置示例")):
        posted_at = time.monotonic()
        response, stdout, body = run_spec_example(title, stack.base_url)
        assert response.status_code == 200, f"{label}: {response.status_code} {response.text}\n{stdout}"
        data = response.json()
        assert CONVERSATION_ID.match(data["conversation_id"]), data
        assert data["conversation_status"] == "STARTING", data
        assert f"会话创建成功: {data['conversation_id']}" in stdout, stdout
        created.append(Created(label, body, data["conversation_id"], posted_at, stdout))

    check_api_gateway(stack)
    broken = create(journey, "broken-setup", {"repository": "user/broken-setup"})

    follow(stack.base_url, [*created, broken])
    for item in (*created, broken):
        status = (item.view or {}).get("conversation_status")
        seconds = f"{item.seconds_to_end:.1f} s" if item.seconds_to_end is not None else "timed out"
        report(capsys, f"e2e: {item.label} {item.conversation_id[:8]} POST -> {status}: {seconds}")

    journey.remember_processes()
    with explained(stack):
        for item in created:
            check_running(stack, item)
            journey.conversations[item.label] = item
        check_broken_setup(stack, broken)


def test_a_create_conversation_event_reaches_running(journey: Journey, capsys: pytest.CaptureFixture[str]) -> None:
    """EventBridge (the stack's bus) -> CreateConversationRule -> CreateConversationQueue -> the
    SQS poller -> EventIntakeFunction -> the same creation as the API's, for the user named."""
    known = {created.conversation_id for created in journey.conversations.values()}
    request = {"repository": "user/repo", "initial_user_msg": "Fix the issue the tracker filed"}
    detail = {"schema_version": "1", "user_id": LOCAL_USER, "idempotency_key": "e2e-ticket-1", "request": request}
    # The user connects the integration first: without it the event creates nothing (docs/events.md).
    authorised = requests.post(
        f"{journey.base_url}/api/settings", json={"authorized_event_sources": [TRUSTED_SOURCE]}, timeout=10
    )
    assert authorised.status_code == 200 and authorised.json()["authorized_event_sources"] == [TRUSTED_SOURCE]
    put_at = time.monotonic()
    answer = journey.client("events").put_events(
        Entries=[
            {
                "EventBusName": journey.bus,
                "Source": TRUSTED_SOURCE,
                "DetailType": "CreateConversation",
                "Detail": json.dumps(detail),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0, answer

    def new_conversation() -> str | None:
        response = requests.get(f"{journey.base_url}/api/conversations", params={"limit": "100"}, timeout=10)
        assert response.status_code == 200, response.text
        fresh = [item["conversation_id"] for item in response.json()["results"] if item["conversation_id"] not in known]
        assert len(fresh) <= 1, fresh
        return fresh[0] if fresh else None

    with explained(journey.stack):
        conversation_id = wait_until(new_conversation, 20, "the event's conversation")
        created = Created("event", request, conversation_id, put_at)
        report(capsys, f"e2e: event {conversation_id[:8]} PutEvents -> listed: {time.monotonic() - put_at:.1f} s")
        follow(journey.base_url, [created])
        seconds = f"{created.seconds_to_end:.1f} s" if created.seconds_to_end is not None else "timed out"
        report(capsys, f"e2e: event {conversation_id[:8]} PutEvents -> RUNNING: {seconds}")
        check_running(journey.stack, created)
        journey.conversations["event"] = created
        journey.remember_processes()

        sqs = journey.client("sqs")
        dead_letters = sqs.get_queue_url(QueueName="local-CreateConversationDeadLetterQueue")["QueueUrl"]
        assert "Messages" not in sqs.receive_message(QueueUrl=dead_letters), "the event was refused"
        # Its status changes went out on the bus: created, each phase, RUNNING.
        changes = wait_until(
            lambda: (
                (found := published_changes(journey, conversation_id))
                and found[-1]["new_status"] == "RUNNING"
                and found
            ),
            10,
            "ConversationStatusChanged up to RUNNING",
        )
        assert changes[0]["old_status"] is None and changes[0]["new_status"] == "STARTING", changes[0]
        assert changes[0]["user_id"] == LOCAL_USER and changes[0]["repository"] == "user/repo"
        assert [change["runtime_status"] for change in changes] == EVERY_PHASE
        assert "Fix the issue" not in json.dumps(changes)  # no message text in events


def test_stop_ends_the_sandbox_and_frees_the_slot(journey: Journey, capsys: pytest.CaptureFixture[str]) -> None:
    minimal = journey.created("minimal")
    with explained(journey.stack):
        before = quota(journey)
        processes = sandbox_processes(journey, minimal)
        response = requests.post(f"{journey.base_url}/api/conversations/{minimal.conversation_id}/stop", timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["conversation_status"] == "STOPPED", response.text
        seconds = wait_gone(processes, "the stopped conversation's sandbox")
        report(capsys, f"e2e: stop {minimal.conversation_id[:8]} -> sandbox and agent-server gone: {seconds:.1f} s")

        after = quota(journey)
        assert after["active"] == before["active"] - 1, (before, after)
        assert after["available"] == before["available"] + 1, (before, after)
        view = view_of(journey, minimal.conversation_id)
        assert view["conversation_status"] == "STOPPED", view
        assert view["status_reason"] == "CONVERSATION$STOPPED_BY_USER", view
        sandbox = wait_until(
            lambda: "exit_code" in (task := sandbox_of(journey.stack.state_dir, minimal.conversation_id)) and task,
            5,
            "local Fargate to record the task's end",
        )
        assert "devstack is stopping" not in sandbox["stopped_reason"], sandbox
        # Stopping again is safe and changes nothing.
        again = requests.post(f"{journey.base_url}/api/conversations/{minimal.conversation_id}/stop", timeout=30)
        assert again.status_code == 200 and again.json()["conversation_status"] == "STOPPED", again.text
        assert quota(journey) == after


def test_a_fourth_conversation_closes_the_least_recently_active(
    journey: Journey, capsys: pytest.CaptureFixture[str]
) -> None:
    """close_oldest (the default policy) with the default limit of 3: full and event are active
    (minimal was stopped); a third fills the limit; a fourth closes full, the least recently active."""
    full, event = journey.created("full"), journey.created("event")
    with explained(journey.stack):
        limits = quota(journey)
        assert (limits["limit"], limits["policy"], limits["active"]) == (3, "close_oldest", 2), limits
        victim_processes = sandbox_processes(journey, full)

        third = create(journey, "third", {"repository": "user/repo", "selected_branch": "develop"})
        assert quota(journey)["active"] == 3
        assert view_of(journey, full.conversation_id)["conversation_status"] == "RUNNING"

        fourth = create(journey, "fourth", {"repository": "user/repo"})
        closed_at = time.monotonic()
        view = view_of(journey, full.conversation_id)
        assert view["conversation_status"] == "STOPPED", view
        assert view["status_reason"] == "AGENT_ERROR$TOO_MANY_CONVERSATIONS", view
        assert quota(journey)["active"] == 3
        assert view_of(journey, event.conversation_id)["conversation_status"] == "RUNNING"
        for created in (third, fourth):
            assert view_of(journey, created.conversation_id)["conversation_status"] in {"STARTING", "RUNNING"}
        wait_gone(victim_processes, "the closed conversation's sandbox")
        report(
            capsys,
            f"e2e: 4th create closed {full.conversation_id[:8]}; its sandbox gone after "
            f"{time.monotonic() - closed_at:.1f} s",
        )

        # Both new conversations start as any other.
        follow(journey.base_url, [third, fourth])
        for created in (third, fourth):
            assert (created.view or {}).get("conversation_status") == "RUNNING", describe(created)
            report(
                capsys,
                f"e2e: {created.label} {created.conversation_id[:8]} POST -> RUNNING: {created.seconds_to_end:.1f} s",
            )
        journey.remember_processes()


def test_delete_removes_the_conversation_and_its_sandbox(journey: Journey, capsys: pytest.CaptureFixture[str]) -> None:
    full, third = journey.created("full"), journey.created("third")
    with explained(journey.stack):
        # A stopped one: only the record (and its stored context) to remove.
        response = requests.delete(f"{journey.base_url}/api/conversations/{full.conversation_id}", timeout=30)
        assert response.status_code == 200 and response.json() is True, response.text
        gone = requests.get(f"{journey.base_url}/api/conversations/{full.conversation_id}", timeout=10)
        assert gone.status_code == 404, gone.text

        # A running one: its sandbox ends and its slot is freed.
        before = quota(journey)
        processes = sandbox_processes(journey, third)
        response = requests.delete(f"{journey.base_url}/api/conversations/{third.conversation_id}", timeout=30)
        assert response.status_code == 200 and response.json() is True, response.text
        assert (
            requests.get(f"{journey.base_url}/api/conversations/{third.conversation_id}", timeout=10).status_code == 404
        )
        seconds = wait_gone(processes, "the deleted conversation's sandbox")
        report(capsys, f"e2e: delete {third.conversation_id[:8]} -> sandbox and agent-server gone: {seconds:.1f} s")
        assert quota(journey)["active"] == before["active"] - 1

        listed = requests.get(f"{journey.base_url}/api/conversations", params={"limit": "100"}, timeout=10).json()
        ids = {item["conversation_id"] for item in listed["results"]}
        assert full.conversation_id not in ids and third.conversation_id not in ids
        # Published: ... -> DELETED.
        changes = wait_until(
            lambda: (
                (found := published_changes(journey, third.conversation_id))
                and found[-1]["new_status"] == "DELETED"
                and found
            ),
            10,
            "ConversationStatusChanged DELETED",
        )
        assert changes[-1]["old_status"] == "RUNNING" and changes[-1]["runtime_status"] is None, changes[-1]


def test_a_sandbox_that_dies_ends_its_conversation(journey: Journey, capsys: pytest.CaptureFixture[str]) -> None:
    """ECS's "ECS Task State Change" (STOPPED) -> SandboxWatchFunction's rule on the default bus:
    a RUNNING conversation whose sandbox died is ERROR RUNTIME_UNHEALTHY, and its slot is free."""
    if "SandboxWatchFunction" not in load_template()["Resources"]:
        pytest.skip("template.yaml has no SandboxWatchFunction")
    event = journey.created("event")
    with explained(journey.stack):
        before = quota(journey)
        processes = sandbox_processes(journey, event)
        sandbox = sandbox_of(journey.stack.state_dir, event.conversation_id)
        killed_at = time.monotonic()
        os.kill(int(sandbox["pid"]), signal.SIGKILL)  # the container's main process dies
        view = wait_until(
            lambda: (found := view_of(journey, event.conversation_id))["conversation_status"] == "ERROR" and found,
            SANDBOX_GONE_TIMEOUT,
            "the conversation to end with its sandbox",
        )
        report(
            capsys, f"e2e: sandbox of {event.conversation_id[:8]} killed -> ERROR: {time.monotonic() - killed_at:.1f} s"
        )
        assert view["error_code"] == "RUNTIME_UNHEALTHY", view
        assert (view["error_details"] or {}).get("exit_code") == 128 + signal.SIGKILL, view
        wait_gone(processes, "the dead sandbox's agent-server")
        assert quota(journey)["active"] == before["active"] - 1


def test_ctrl_c_leaves_nothing_running(journey: Journey) -> None:
    stack = journey.stack
    journey.remember_processes()
    running_processes = journey.processes
    assert any("openhands.agent_server" in process.command for process in running_processes)
    assert stack.interrupt(SHUTDOWN_TIMEOUT) == 0, stack.output()
    deadline = time.monotonic() + LEFTOVER_GRACE
    alive = [process for process in running_processes if process.is_alive()]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [process for process in alive if process.is_alive()]
    assert not alive, "still running after Ctrl-C:\n" + "\n".join(f"{p.pid} {p.command}" for p in alive)
    assert not identify(processes_using(stack.state_dir)), "processes still use the state directory"
    assert "devstack stopped" in stack.output()
