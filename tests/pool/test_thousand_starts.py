"""Many starts (1,000 with POOL_SIMULATION_STARTS=1000) through the real handlers with RunTask
throttled and Fargate out of capacity half the time: every conversation ends RUNNING or ERROR
with a typed code, no slot leaks, no pool sandbox serves two conversations.

moto holds the data (DynamoDB, S3, KMS, ECS). Step Functions' part is played by a small driver
that follows the state machine's own definition: it invokes each state's real handler in order,
retries LaunchSandbox on the errors and as many times as the ASL's Retry says (without the
waits), and on anything else goes to RecordFailure, as the Catch does. A sandbox's part is its
`ready` with the token it was given (RunTask's environment, or the pool assignment); the pool is
reconciled (its RunTask throttled too) every few starts, as the nudges after claims would.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections import Counter
from typing import Any

import pytest
from botocore.config import Config
from conversation_service import services
from conversation_service.dal import aws
from conversation_service.dal.workflow import WorkflowEngine
from conversation_service.models.errors import WorkflowNotWaiting
from moto.dynamodb.models.table import StreamShard

from devstack.lambda_runtime import FunctionError
from devstack.task_credentials import open_sealed_sandbox_token
from devstack.template_resources import ROOT
from tests.integration.conftest import WorkflowHarness
from tests.pool.support import client, fill, pool_call, pool_harness, pool_items, pool_task
from tests.pool.weather import RunTaskWeather
from tests.reliability.conftest import LLM_KEY, install_stub_remote

pytestmark = pytest.mark.usefixtures("moto")
# 1,000 take about 4 minutes of CPU here (moto spends ~10 ms of CPU on each of the ~25 AWS calls a
# start makes): `make test` runs 150 (about 40 s), `POOL_SIMULATION_STARTS=1000` the full run.
STARTS = int(os.environ.get("POOL_SIMULATION_STARTS", "150"))
POOL = 10
RECONCILE_EVERY = 4  # as a nudge after claims would; each round stops at its first throttle


class TaskTokens:
    """Step Functions' task tokens: the driver issues one per LaunchSandbox attempt; the sandbox
    API answers the current one (a token of an attempt that was retried is no longer waiting)."""

    def __init__(self) -> None:
        self.waiting: dict[str, str] = {}  # token -> conversation id
        self.outcomes: dict[str, tuple[str, Any]] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def answer(kind: str) -> Any:
            def method(_engine: WorkflowEngine, token: str, *args: Any) -> None:
                if token not in self.waiting:
                    raise WorkflowNotWaiting("TaskTimedOut")
                if kind != "heartbeat":
                    self.outcomes[self.waiting.pop(token)] = (kind, args)

            return method

        for kind in ("heartbeat", "succeed", "fail"):
            monkeypatch.setattr(WorkflowEngine, kind, answer(kind))


def launch_retry_policy() -> tuple[set[str], int]:
    text = (ROOT / "statemachine" / "create_conversation.asl.json").read_text()
    definition = json.loads(re.sub(r"\$\{\w+\}", "1", text))  # the template's substitutions are numbers
    (retrier,) = [
        r for r in definition["States"]["LaunchSandbox"]["Retry"] if "SandboxLaunchThrottled" in r["ErrorEquals"]
    ]
    return set(retrier["ErrorEquals"]), int(retrier["MaxAttempts"])


def test_a_thousand_starts_with_runtask_throttled_all_end_running_or_typed_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moto backs up every table a transaction touches with a deep copy, stream records included
    # (they only grow: minutes for 1,000 starts). A cancelled transaction writes no stream record,
    # so the backup can share them (as tests/support/serial_moto.py does).
    monkeypatch.setattr(StreamShard, "__deepcopy__", lambda self, memo: self, raising=False)
    harness = pool_harness(monkeypatch, target=POOL, MaxActiveConversations="1000")
    # What the handlers log and measure is not under test here: writing it costs more CPU than moto.
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "ERROR")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    from conversation_service.observability import logger

    monkeypatch.setattr(logger._logger, "level", logging.ERROR)  # restored after the test
    monkeypatch.setenv("MAX_ACTIVE_CONVERSATIONS", "1000")
    # The workflow's retries are the ones under test: the SDK's own (with their sleeps) are off.
    monkeypatch.setattr(aws, "_CLIENT_CONFIG", Config(retries={"mode": "standard", "max_attempts": 1}))
    aws.client.cache_clear()
    services.reset()
    weather = RunTaskWeather(throttled=0.45, no_capacity=0.2)
    weather.attach(aws.client("ecs"))
    tokens = TaskTokens()
    tokens.install(monkeypatch)
    retry_errors, max_attempts = launch_retry_policy()
    api = sys.modules[harness.runtime.handler("ApiFunction").__module__]
    service = install_stub_remote()
    api.conversation_service = lambda: service  # type: ignore[attr-defined]
    settings = {"llm_model": "m", "llm_api_key": LLM_KEY}
    assert harness.api("POST", "/api/settings", settings)[0] == 200
    credentials: dict[str, str] = {}  # task ARN -> pool credential

    outcomes: Counter[tuple[str, str | None, str | None]] = Counter()
    cpu_started = time.process_time()
    for index in range(STARTS):
        if index % RECONCILE_EVERY == 0:
            for sandbox_id, credential in fill(harness).items():  # reconcile (RunTask throttled too), boot
                credentials[pool_task(harness, sandbox_id)["taskArn"]] = credential
        status, body = harness.api("POST", "/api/conversations", {"repository": "owner/repo"})
        assert status == 200, body
        conversation_id = body["conversation_id"]
        run_workflow(harness, conversation_id, tokens, retry_errors, max_attempts, credentials)
        view = harness.conversation(conversation_id)
        outcomes[(view["conversation_status"], view["error_code"], view["start"])] += 1
        assert view["conversation_status"] in ("RUNNING", "ERROR"), view
        if view["conversation_status"] == "ERROR":
            assert view["error_code"] == "SANDBOX_LAUNCH_FAILED" and view["error_message"], view
        assert services.user_store().active_count("user-1") == (view["conversation_status"] == "RUNNING")
        # Deleted once checked: moto copies a whole table for every transaction, so 1,000 items
        # would make this quadratic. The slot must come back with it.
        assert harness.api("DELETE", f"/api/conversations/{conversation_id}")[0] == 200
        assert services.user_store().active_count("user-1") == 0, "a concurrency slot leaked"

    claimed = [i["conversation_id"] for i in pool_items(harness) if i["pool_status"] == "CLAIMED"]
    assert len(claimed) == len(set(claimed)), "a pool sandbox served two conversations"
    running = sum(count for (status, _, _), count in outcomes.items() if status == "RUNNING")
    warm = sum(count for (_, _, start), count in outcomes.items() if start == "warm")
    # Both kinds of weather, both endings and both kinds of start happened.
    assert weather.answers["throttled"] and weather.answers["no_capacity"]
    assert 0 < running < STARTS and warm == len(claimed) > 0
    cpu = time.process_time() - cpu_started
    print(f"{STARTS} starts in {cpu:.1f} s of CPU: {dict(outcomes)}; RunTask answers {weather.answers}")


def run_workflow(
    harness: WorkflowHarness,
    conversation_id: str,
    tokens: TaskTokens,
    retry_errors: set[str],
    max_attempts: int,
    credentials: dict[str, str],
) -> None:
    step = {"conversation_id": conversation_id, "execution_name": conversation_id}
    try:
        harness.runtime.invoke("InitializeContextFunction", step)
        for attempt in range(max_attempts + 1):
            token = f"{conversation_id}-{attempt}"
            tokens.waiting[token] = conversation_id
            try:
                launched = harness.runtime.invoke("LaunchSandboxFunction", {**step, "task_token": token})
                break
            except FunctionError as error:
                tokens.waiting.pop(token, None)
                if error.error_type not in retry_errors or attempt == max_attempts:
                    raise
        run_sandbox(harness, conversation_id, launched, credentials)
        kind, args = tokens.outcomes[conversation_id]
        assert kind == "succeed", (kind, args)
        harness.runtime.invoke("MarkRunningFunction", {**step, "sandbox": args[0]})
    except FunctionError as error:
        failure = {"Error": error.error_type, "Cause": json.dumps({"errorMessage": str(error)})}
        harness.runtime.invoke("RecordFailureFunction", {**step, "error": failure})


def run_sandbox(
    harness: WorkflowHarness, conversation_id: str, launched: dict[str, str], credentials: dict[str, str]
) -> None:
    if launched["start"] == "warm":
        status, body = pool_call(harness, "GET", "/sandbox/v1/pool/assignment", credentials[launched["task_arn"]])
        assert status == 200, body
        token = harness.open_assigned_token(body["assignment"])
    else:
        ecs = client(harness, "ecs")
        task = ecs.describe_tasks(
            cluster=harness.resources.attributes["SandboxCluster.Arn"], tasks=[launched["task_arn"]]
        )
        environment = task["tasks"][0]["overrides"]["containerOverrides"][0]["environment"]
        token = open_sealed_sandbox_token(client(harness, "kms"), environment, conversation_id)
    ready = {
        "type": "ready",
        "agent_server_url": "http://127.0.0.1:8000",
        "agent_conversation_id": "a",
        "microagents": [],
    }
    assert harness.sandbox("POST", "/sandbox/v1/events", token, ready)[0] == 200
