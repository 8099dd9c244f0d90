"""Races: 200 parallel creates by one user with a limit of 3, and stop/delete racing the workflow.

The 200-way race runs as tests/emulated/test_concurrency.py's 50-way one does, for the reason found
there: moto takes no lock, so it runs against moto in its own process handling one request at a
time (tests/support/serial_moto.py: each AWS call atomic, as DynamoDB's are) while the 200
requests interleave their calls freely. The creates call the ConversationService directly from 200
threads: the Powertools resolver keeps its current event in a module global, and in Lambda one
execution environment never serves two requests at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.config import Config
from conversation_service import services
from conversation_service.dal import aws
from conversation_service.models.api import CreateConversationRequest
from conversation_service.models.errors import ServiceError
from moto import mock_aws

from devstack.template_resources import StackResources, provision
from tests.integration.conftest import MOTO_CONFIG, WorkflowHarness
from tests.reliability.conftest import GIT_TOKEN, LLM_KEY, install_stub_remote, scan_all
from tests.reliability.workflow_support import (
    READY,
    execution_status,
    fast_harness,
    report,
    run_sandbox,
    sandbox_token,
    settle,
    start,
)
from tests.support.serial_moto import serial_moto

PARALLEL = 200
# Under close_oldest every create past the third closes another in a transaction that moto
# executes after deep-copying the table: 200 take over a minute here, 60 a few seconds.
PARALLEL_CLOSE_OLDEST = 60
LIMIT = 3


@pytest.fixture
def serial_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[StackResources]:
    with serial_moto() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        aws.client.cache_clear()
        resources = provision("race200")
        for key, value in resources.functions["ApiFunction"].environment.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("MAX_ACTIVE_CONVERSATIONS", str(LIMIT))
        # One moto thread serves 200 clients: a request may wait its turn far longer than DynamoDB
        # ever takes. The service's 10 s read timeout would then resend transactions moto already
        # applied (moto ignores ClientRequestToken; DynamoDB does not): wait instead.
        patient = aws._CLIENT_CONFIG.merge(Config(read_timeout=300, connect_timeout=60))
        monkeypatch.setattr(aws, "_CLIENT_CONFIG", patient)
        services.reset()
        try:
            yield resources
        finally:
            aws.client.cache_clear()
            services.reset()


@pytest.mark.parametrize(("policy", "parallel"), [("reject", PARALLEL), ("close_oldest", PARALLEL_CLOSE_OLDEST)])
def test_parallel_creates_never_exceed_the_limit_nor_lose_a_record(
    serial_stack: StackResources, monkeypatch: pytest.MonkeyPatch, policy: str, parallel: int
) -> None:
    monkeypatch.setenv("CONCURRENCY_POLICY", policy)
    services.reset()
    from conversation_service.models.api import SettingsUpdate

    services.settings_service().update(
        "racer", SettingsUpdate(llm_model="m", llm_api_key=LLM_KEY, provider_tokens={"github": GIT_TOKEN})
    )
    service = install_stub_remote(sleep=time.sleep)  # the service's own backoff between attempts
    barrier = threading.Barrier(parallel)
    request = CreateConversationRequest(repository="owner/repo", initial_user_msg="race")

    def one(_: int) -> tuple[int, str]:
        barrier.wait()
        try:
            return 200, service.create("racer", request).conversation_id
        except ServiceError as error:
            return error.status_code, error.msg_id

    with ThreadPoolExecutor(parallel) as pool:
        outcomes = list(pool.map(one, range(parallel)))

    items = scan_all(serial_stack.physical["ConversationsTable"])
    statuses = Counter(item["conversation_status"]["S"] for item in items)
    counter = services.user_store().active_count("racer")
    answers = Counter(status for status, _ in outcomes)
    summary = f"{answers=} {statuses=} {counter=}"
    created = [value for status, value in outcomes if status == 200]
    assert len(created) == len(set(created)), "duplicate ids: " + summary
    assert set(created) == {item["conversation_id"]["S"] for item in items}, "lost or extra records: " + summary
    assert counter == statuses["STARTING"] <= LIMIT, summary
    assert set(answers) <= {200, 429, 503}, summary
    if policy == "reject":
        assert answers == {200: LIMIT, 429: parallel - LIMIT}, summary
    else:
        assert counter == LIMIT and statuses["STOPPED"] == len(created) - LIMIT, summary


# -- stop and delete racing the workflow ------------------------------------------------------------
@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkflowHarness]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        harness = fast_harness(monkeypatch)
        from api.app import openapi_schema

        paths = openapi_schema()["paths"]
        if "/api/conversations/{conversation_id}/stop" not in paths:
            pytest.skip("no stop endpoint yet (lifecycle endpoints): nothing to race")
        yield harness
    aws.client.cache_clear()
    services.reset()


POINTS = ["queued", "launched", "context_delivered", "setting_up", "ready"]


def _advance(harness: WorkflowHarness, conversation_id: str, point: str) -> str | None:
    """Bring the workflow to `point`; returns the sandbox token once there is one."""
    if point == "queued":
        return None
    token = sandbox_token(harness, conversation_id)
    if point == "launched":
        return token
    report(harness, token, {"type": "phase", "phase": "STATUS$RUNTIME_STARTED"})
    harness.sandbox("GET", "/sandbox/v1/context", token)
    if point == "context_delivered":
        return token
    report(harness, token, {"type": "phase", "phase": "STATUS$SETTING_UP_WORKSPACE"})
    if point == "setting_up":
        return token
    run_sandbox(harness, token)
    harness.wait_for(lambda: harness.conversation(conversation_id)["conversation_status"] == "RUNNING", what="RUNNING")
    return token


def _assert_no_leak(harness: WorkflowHarness, conversation_id: str, expect_record: bool) -> None:
    items = scan_all(harness.resources.physical["ConversationsTable"])
    ids = [item["conversation_id"]["S"] for item in items]
    assert len(ids) == len(set(ids))
    assert (conversation_id in ids) == expect_record
    active = sum(1 for item in items if item["conversation_status"]["S"] in ("STARTING", "RUNNING"))
    assert services.user_store().active_count("user-1") == active <= 3


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("action", ["stop", "delete"])
def test_stop_or_delete_at_any_point_of_the_workflow_ends_it_cleanly(
    harness: WorkflowHarness, tmp_path: Path, action: str, point: str
) -> None:
    conversation_id = start(harness, tmp_path)
    token = _advance(harness, conversation_id, point)
    method, path = (
        ("POST", f"/api/conversations/{conversation_id}/stop")
        if action == "stop"
        else (
            "DELETE",
            f"/api/conversations/{conversation_id}",
        )
    )
    status, body = harness.api(method, path)
    assert status == 200, body
    if action == "stop":
        view = settle(harness, conversation_id)
        assert view["conversation_status"] == "STOPPED", view
    else:
        assert harness.api("GET", f"/api/conversations/{conversation_id}")[0] == 404
        harness.wait_for(lambda: execution_status(harness, conversation_id) != "RUNNING", what="the execution end")
    harness.wait_for(
        lambda: (task := harness.sandbox_task(conversation_id)) is None or task["desiredStatus"] == "STOPPED",
        what="the sandbox task to stop",
    )
    if token is not None:  # the sandbox is told to go away
        assert report(harness, token, READY) in (401, 409)
    _assert_no_leak(harness, conversation_id, expect_record=action == "stop")
