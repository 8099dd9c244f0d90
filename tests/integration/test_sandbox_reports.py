"""What a sandbox reports is checked (issue 10): its agent-server URL must be its own task's
address, every field is capped, and an oversized or malformed report gets a 4xx with the spec's
error body, never a 500. The mode is "task", as on AWS: the address comes from DescribeTasks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation_service import services
from conversation_service.dal import aws
from moto import mock_aws

from tests.integration.conftest import MOTO_CONFIG, WorkflowHarness, make_harness
from tests.support.api_gateway import api_event
from tests.support.git_repositories import make_repository


@pytest.fixture(scope="module")
def module_monkeypatch() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def task_mode(module_monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkflowHarness]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        yield make_harness(module_monkeypatch, environment_overrides={"SANDBOX_AGENT_SERVER_ADDRESS": "task"})
    aws.client.cache_clear()
    services.reset()


@pytest.fixture(scope="module")
def starting(task_mode: WorkflowHarness, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One conversation whose sandbox has fetched its context: (conversation id, token)."""
    repository = tmp_path_factory.mktemp("repo") / "repo"
    make_repository(repository, ("main",))
    assert task_mode.api("POST", "/api/settings", {"llm_model": "m", "llm_api_key": "sk-1"})[0] == 200
    status, created = task_mode.api("POST", "/api/conversations", {"repository": str(repository)})
    assert status == 200, created
    conversation_id = str(created["conversation_id"])
    token = task_mode.open_sandbox_token(conversation_id)
    assert task_mode.sandbox("GET", "/sandbox/v1/context", token)[0] == 200
    return conversation_id, token


def post_raw(
    harness: WorkflowHarness, token: str, raw: str, path: str = "/sandbox/v1/events"
) -> tuple[int, dict[str, Any]]:
    event = api_event("POST", path, None, user_id=None, raw_body=raw)
    event["headers"]["Authorization"] = f"Bearer {token}"
    event["resource"] = "/sandbox/{proxy+}"
    response = harness.runtime.invoke("SandboxApiFunction", event)
    return response["statusCode"], json.loads(response["body"])


def assert_error_body(body: dict[str, Any]) -> None:
    assert body["status"] == "error" and body["message"] and body["msg_id"], body


def ready(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "ready", "agent_server_url": url, "agent_conversation_id": "agent-1", **extra}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",  # loopback is not the task's address on AWS
        "http://169.254.169.254:80",
        "http://10.9.9.9:8000",
        "https://{ip}:8000",
        "http://user:pw@{ip}:8000",
        "http://{ip}:8000/elsewhere",
        "http://{ip}:8000/?next=x",
        "http://{ip}",
        "http://{ip}:99999",
        "http://{ip}.evil.example:8000",
        "not a url",
    ],
)
def test_a_ready_url_that_is_not_the_tasks_own_address_is_refused(
    task_mode: WorkflowHarness, starting: tuple[str, str], url: str
) -> None:
    conversation_id, token = starting
    own = task_mode.agent_server_url(conversation_id).removeprefix("http://").rsplit(":", 1)[0]
    status, body = task_mode.sandbox("POST", "/sandbox/v1/events", token, ready(url.format(ip=own)))
    assert status == 400, body
    assert_error_body(body)
    assert body["msg_id"] == "SANDBOX$AGENT_SERVER_ADDRESS_REFUSED"
    assert task_mode.conversation(conversation_id)["conversation_status"] == "STARTING"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("{" * 100_000, 413),  # larger than any report
        ('{"type": "failed", "details": ' + "[" * 5000 + "]" * 5000 + "}", 400),  # deeper than the parser goes
        ("[" * 3000 + "]" * 3000, 400),
        ("not json", 422),
        (json.dumps({"type": "ready", "agent_server_url": "http://10.0.0.1:8000"}), 400),  # no agent id
        (json.dumps(ready("http://10.0.0.1:8000", microagents=["x" * 201])), 422),
        (json.dumps(ready("http://10.0.0.1:8000", commit="not-a-commit")), 422),
        (json.dumps(ready("http://10.0.0.1:8000", agent_conversation_id="../../x")), 422),
        (json.dumps(ready("http://10.0.0.1:8000", timings={"a_step_of_its_own": 1.0})), 422),  # only timings.py's
        (json.dumps(ready("http://10.0.0.1:8000", timings={"clone": -1.0})), 422),
        (json.dumps(ready("http://10.0.0.1:8000", reported_at="2020-01-01T00:00:00Z")), 422),  # the service's own
        (
            json.dumps(
                {"type": "failed", "error_code": "SETUP_SCRIPT_FAILED", "details": {"a": {"b": {"c": {"d": {"e": 1}}}}}}
            ),
            422,
        ),
        (json.dumps({"type": "failed", "error_code": "INTERNAL", "details": {"output_tail": "x" * 20_000}}), 422),
        (json.dumps({"type": "failed", "message": "m" * 4001}), 422),
        (json.dumps({"type": "phase", "phase": "p" * 101}), 422),
        (json.dumps({"type": "heartbeat", "extra": 1}), 422),
    ],
)
def test_an_oversized_or_malformed_report_gets_a_4xx_with_the_error_body(
    task_mode: WorkflowHarness, starting: tuple[str, str], raw: str, status: int
) -> None:
    conversation_id, token = starting
    answer, body = post_raw(task_mode, token, raw)
    assert answer == status, body
    assert_error_body(body)
    assert task_mode.conversation(conversation_id)["conversation_status"] == "STARTING"


def test_any_sandbox_body_deeper_than_the_parser_goes_is_a_400(
    task_mode: WorkflowHarness, starting: tuple[str, str]
) -> None:
    """The channel's other endpoints take bigger bodies (agent events): the depth is checked too."""
    status, body = post_raw(task_mode, starting[1], "[" * 100_000 + "]" * 100_000, path="/sandbox/v1/agent-events")
    assert status == 400, body
    assert_error_body(body)


def test_the_tasks_own_address_is_accepted_and_stored_normalised(
    task_mode: WorkflowHarness, starting: tuple[str, str]
) -> None:
    conversation_id, token = starting
    own = task_mode.agent_server_url(conversation_id)
    status, body = task_mode.sandbox("POST", "/sandbox/v1/events", token, ready(own + "/"))
    assert status == 200, body
    view = task_mode.wait_for(
        lambda: (c := task_mode.conversation(conversation_id))["conversation_status"] == "RUNNING" and c,
        what="RUNNING",
    )
    assert view["agent_server_url"] == own


def test_loopback_is_the_local_stacks_own_address(tmp_path: Path, workflow: WorkflowHarness) -> None:
    make_repository(tmp_path / "repo", ("main",))
    assert workflow.api("POST", "/api/settings", {"llm_model": "m", "llm_api_key": "sk-1"})[0] == 200
    conversation_id = workflow.api("POST", "/api/conversations", {"repository": str(tmp_path / "repo")})[1][
        "conversation_id"
    ]
    token = workflow.open_sandbox_token(conversation_id)
    assert workflow.sandbox("GET", "/sandbox/v1/context", token)[0] == 200
    assert workflow.sandbox("POST", "/sandbox/v1/events", token, ready("http://10.1.2.3:8000"))[0] == 400
    assert workflow.sandbox("POST", "/sandbox/v1/events", token, ready("http://127.0.0.1:41234"))[0] == 200
