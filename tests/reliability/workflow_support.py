"""Driving the real workflow (tests/integration's WorkflowHarness: moto's Step Functions engine,
the real handlers) from a scripted sandbox, and checking how every case ends."""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conversation_service import services

from devstack import template_resources
from devstack.stream_pump import StreamPump
from devstack.template_resources import load_template
from tests.integration.conftest import WorkflowHarness, make_harness
from tests.reliability.conftest import GIT_TOKEN, LLM_KEY, scan_all
from tests.support.git_repositories import make_repository

SANDBOX_PHASES = (
    "STATUS$RUNTIME_STARTED",
    "STATUS$SETTING_UP_WORKSPACE",
    "STATUS$RUNNING_SETUP_SCRIPT",
    "STATUS$SETTING_UP_GIT_HOOKS",
    "STATUS$STARTING_AGENT_SERVER",
)
READY = {
    "type": "ready",
    "agent_server_url": "http://127.0.0.1:8000",
    "agent_conversation_id": "agent-1",
    "workspace_dir": "/workspace/repo",
    "commit": "0" * 40,
    "microagents": [],
}
FAST = {"SandboxHeartbeatSeconds": "3", "SandboxStartTimeoutSeconds": "12"}
FAST_LAUNCH_RETRY_SECONDS = 1
"""LaunchSandbox retries a throttled RunTask 5 times with full jitter, doubling from the state
machine's 2 s: up to 62 s before the conversation can settle; from 1 s here, up to 31 s."""


def fast_harness(monkeypatch: pytest.MonkeyPatch) -> WorkflowHarness:
    """The template's stack with short timeouts and the throttled launch's backoff from 1 s (the ASL
    file's literal 2 s: Retry's IntervalSeconds takes no substitution that keeps the file JSON)."""
    provisioned = template_resources.state_machine_definition

    def with_fast_launch_retries(properties: dict[str, Any], resolver: Any) -> str:
        definition = json.loads(provisioned(properties, resolver))
        for retrier in definition["States"]["LaunchSandbox"]["Retry"]:
            if retrier["ErrorEquals"] == ["SandboxLaunchThrottled"]:
                retrier["IntervalSeconds"] = FAST_LAUNCH_RETRY_SECONDS
        return json.dumps(definition)

    monkeypatch.setattr(template_resources, "state_machine_definition", with_fast_launch_retries)
    return use_template_pump(make_harness(monkeypatch, FAST))


def start(harness: WorkflowHarness, tmp_path: Path, user_id: str = "user-1") -> str:
    repository = tmp_path / f"repo-{user_id}"
    if not repository.exists():
        make_repository(repository)
    settings = {"llm_model": "m", "llm_api_key": LLM_KEY, "provider_tokens": {"github": GIT_TOKEN}}
    assert harness.api("POST", "/api/settings", settings, user_id=user_id)[0] == 200
    status, body = harness.api("POST", "/api/conversations", {"repository": str(repository)}, user_id=user_id)
    assert status == 200, body
    return str(body["conversation_id"])


def sandbox_token(harness: WorkflowHarness, conversation_id: str, timeout: float = 20.0) -> str:
    """The sandbox's token, once the launch step has handed its task token to Step Functions
    (moto accepts heartbeats only from then on; AWS from the start, and a container boots slower)."""
    token = harness.open_sandbox_token(conversation_id)
    harness.wait_for(
        lambda: any(event["type"] == "TaskSubmitted" for event in harness.history(conversation_id)),
        timeout=timeout,
        what="the launch step to submit its task",
    )
    return token


def report(harness: WorkflowHarness, token: str, event: dict[str, Any]) -> int:
    return harness.sandbox("POST", "/sandbox/v1/events", token, event)[0]


def run_sandbox(harness: WorkflowHarness, token: str, *, until: str | None = None, fail: str | None = None) -> None:
    """The bootstrap's protocol: RUNTIME_STARTED, the context, the other phases, ready.
    `until`: go silent after entering this phase (a crash). `fail`: report `failed` in it."""
    for phase in SANDBOX_PHASES:
        report(harness, token, {"type": "phase", "phase": phase})
        if phase == "STATUS$RUNTIME_STARTED":
            harness.sandbox("GET", "/sandbox/v1/context", token)
        if phase == fail:
            failure = {"type": "failed", "error_code": _code_for(phase), "message": f"failed in {phase}"}
            report(harness, token, failure)
            return
        if phase == until:
            return
    report(harness, token, READY)


def _code_for(phase: str) -> str:
    return {
        "STATUS$RUNTIME_STARTED": "INTERNAL",
        "STATUS$SETTING_UP_WORKSPACE": "CLONE_FAILED",
        "STATUS$RUNNING_SETUP_SCRIPT": "SETUP_SCRIPT_FAILED",
        "STATUS$SETTING_UP_GIT_HOOKS": "GIT_HOOKS_FAILED",
        "STATUS$STARTING_AGENT_SERVER": "RUNTIME_UNHEALTHY",
    }[phase]


def execution_status(harness: WorkflowHarness, conversation_id: str) -> str | None:
    """The status of the conversation's (first run's) execution; None while it has none."""
    try:
        return str(harness.execution(conversation_id)["status"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return None
        raise


def settle(harness: WorkflowHarness, conversation_id: str, timeout: float = 75.0) -> dict[str, Any]:
    """Wait until the conversation left STARTING and its execution (if any) ended; return its view."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        harness.pump.pump_once()
        view = harness.conversation(conversation_id)
        if view["conversation_status"] != "STARTING" and execution_status(harness, conversation_id) != "RUNNING":
            return view
        time.sleep(0.1)
    view = harness.conversation(conversation_id)
    raise AssertionError(
        f"{conversation_id} did not settle in {timeout} s: {view['conversation_status']} {view['runtime_status']}, "
        f"execution {execution_status(harness, conversation_id)}"
    )


def assert_clean_end(harness: WorkflowHarness, conversation_id: str, expected: str) -> dict[str, Any]:
    view = settle(harness, conversation_id)
    assert view["conversation_status"] == expected, view
    conversations = harness.resources.physical["ConversationsTable"]
    items = scan_all(conversations)
    assert not [i for i in items if i["conversation_status"]["S"] == "STARTING"], "a conversation was left STARTING"
    for user in {item["user_id"]["S"] for item in items}:
        active = sum(
            1 for i in items if i["user_id"]["S"] == user and i["conversation_status"]["S"] in ("STARTING", "RUNNING")
        )
        assert services.user_store().active_count(user) == active, f"{user}: a concurrency slot leaked"
    task = harness.sandbox_task(conversation_id)
    if expected == "RUNNING":
        assert task is not None and task["desiredStatus"] == "RUNNING"
    elif task is not None:
        assert task["desiredStatus"] == "STOPPED", "the sandbox task of a failed conversation is still running"
    history = str(harness.history(conversation_id)) if execution_status(harness, conversation_id) else ""
    assert LLM_KEY not in history and GIT_TOKEN not in history
    return view


@cache
def filtered_event_names(function: str) -> frozenset[str]:
    """The stream event names the function's FilterCriteria lets through (all when it has none).
    Read once per process: a parse of template.yaml is ~0.1 s of CPU, paid by every test otherwise."""
    events = load_template()["Resources"][function]["Properties"].get("Events", {})
    patterns = [
        json.loads(item["Pattern"])
        for event in events.values()
        if event.get("Type") == "DynamoDB"
        for item in event["Properties"].get("FilterCriteria", {}).get("Filters", [])
    ]
    names = frozenset(name for pattern in patterns for name in pattern.get("eventName", []))
    return names or frozenset({"INSERT", "MODIFY", "REMOVE"})


class TemplateStreamPump(StreamPump):
    """Hands the stream's records to the function as the template's event source mapping would:
    only the records its FilterCriteria lets through (all of them when it has none)."""

    def __init__(self, harness: WorkflowHarness, function: str = "ConversationStreamFunction") -> None:
        super().__init__(
            harness.resources.attributes["ConversationsTable.StreamArn"], harness.runtime, function, harness.session
        )
        self.event_names = filtered_event_names(function)

    def pump_once(self) -> int:
        self._refresh_shards()
        delivered = 0
        for shard_id, iterator in list(self._iterators.items()):
            response = self._client.get_records(ShardIterator=iterator, Limit=100)
            records = [self._as_lambda_record(record) for record in response.get("Records", [])]
            chosen = [record for record in records if record["eventName"] in self.event_names]
            if chosen:
                if self._deliver(chosen).get("batchItemFailures"):
                    continue  # read the same records again next time, as Lambda retries the batch
                delivered += len(chosen)
            if response.get("NextShardIterator"):
                self._iterators[shard_id] = response["NextShardIterator"]
        return delivered


def use_template_pump(harness: WorkflowHarness) -> WorkflowHarness:
    harness.pump = TemplateStreamPump(harness)
    return harness
