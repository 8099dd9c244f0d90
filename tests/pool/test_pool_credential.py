"""An idle sandbox's pool credential opens its own assignment and idle report, nothing else; the
conversation endpoints do not know it, and a conversation's token does not open the pool's."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.pool.support import client, fill, pool_call, pool_harness, pool_items, pool_task, reconcile, task_environment
from tests.reliability.workflow_support import sandbox_token, start

pytestmark = pytest.mark.usefixtures("moto")


def test_a_pool_credential_opens_only_its_own_assignment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    harness = pool_harness(monkeypatch, target=2)
    credentials = fill(harness)
    (first, first_credential), (second, second_credential) = sorted(credentials.items())

    # Nothing of any conversation: the sandbox API's conversation endpoints answer 401.
    for method, path in (("GET", "/sandbox/v1/context"), ("POST", "/sandbox/v1/events")):
        body = {"type": "heartbeat"} if method == "POST" else None
        assert harness.sandbox(method, path, first_credential, body)[0] == 401
    # Its id with another secret, another sandbox's secret, no credential, a made-up one: 401.
    secret_of_second = second_credential.split(".", 1)[1]
    for credential in (f"{first}.{secret_of_second}", f"{first}.x", None, "pool-0000.secret", "Basic abc"):
        assert pool_call(harness, "GET", "/sandbox/v1/pool/assignment", credential)[0] == 401
        assert pool_call(harness, "POST", "/sandbox/v1/pool/idle", credential, {"type": "idle"})[0] == 401

    conversation_id = start(harness, tmp_path)
    claimed = harness.wait_for(
        lambda: next((i["sandbox_id"] for i in pool_items(harness) if i.get("conversation_id")), None),
        what="a claim",
    )
    other, other_credential = (second, second_credential) if claimed == first else (first, first_credential)
    claimed_credential = credentials[claimed]
    # The other idle sandbox waits and gets nothing: it cannot see the claimed one's assignment.
    status, body = pool_call(harness, "GET", "/sandbox/v1/pool/assignment", other_credential, query={"wait": "0.3"})
    assert (status, body) == (200, {"assignment": None})
    # A conversation's token does not open the pool's endpoints.
    assignment = pool_call(harness, "GET", "/sandbox/v1/pool/assignment", claimed_credential, query={"wait": "1"})[1][
        "assignment"
    ]
    assert "SANDBOX_TOKEN" not in assignment  # sealed for the task role, as in RunTask
    token = harness.open_assigned_token(assignment)
    assert token.startswith(f"{conversation_id}.")
    assert pool_call(harness, "GET", "/sandbox/v1/pool/assignment", token)[0] == 401
    # Once delivered, the claimed sandbox's credential opens nothing more.
    assert pool_call(harness, "GET", "/sandbox/v1/pool/assignment", claimed_credential)[0] == 410
    assert pool_call(harness, "POST", "/sandbox/v1/pool/idle", claimed_credential, {"type": "idle"})[0] == 410
    assert harness.sandbox("GET", "/sandbox/v1/context", claimed_credential)[0] == 401

    # A retired sandbox is told to stop.
    monkeypatch.setenv("POOL_TARGET_IDLE", "0")
    from conversation_service import services

    services.reset()
    assert other in reconcile(harness)["retired"]
    assert pool_call(harness, "GET", "/sandbox/v1/pool/assignment", other_credential)[0] == 410


def test_run_task_holds_no_clear_credential_for_pool_or_cold_launches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A pool launch's credential and a cold launch's token go into RunTask sealed for the task
    role: ECS task descriptions (and CloudTrail's record of RunTask) hold only ciphertext, and a
    pool ciphertext opens only under its own sandbox id."""
    harness = pool_harness(monkeypatch, target=1)
    ((sandbox_id, credential),) = fill(harness).items()
    warm = start(harness, tmp_path)  # claims the idle sandbox
    harness.wait_for(lambda: any(i.get("conversation_id") == warm for i in pool_items(harness)), what="a claim")
    cold = start(harness, tmp_path)  # none idle (no nudge in this harness): RunTask
    cold_token = sandbox_token(harness, cold)
    assert cold_token.startswith(f"{cold}.") and credential.startswith(f"{sandbox_id}.")

    ecs, kms = client(harness, "ecs"), client(harness, "kms")
    cluster = harness.resources.attributes["SandboxCluster.Arn"]
    tasks = ecs.describe_tasks(cluster=cluster, tasks=ecs.list_tasks(cluster=cluster)["taskArns"])["tasks"]
    assert {task["startedBy"] for task in tasks} == {sandbox_id, cold}
    pool_environment = task_environment(pool_task(harness, sandbox_id))
    assert set(pool_environment) == {"SANDBOX_POOL_ID", "SANDBOX_POOL_TOKEN_CIPHERTEXT", "SANDBOX_API_URL"}
    described = json.dumps(tasks, default=str)
    for name, secret in (("pool credential", credential), ("sandbox token", cold_token)):
        assert secret.split(".", 1)[1] not in described, f"the {name} is readable in RunTask's overrides"

    # The pool ciphertext opens under its own id only, not as a conversation's or another sandbox's.
    blob = base64.b64decode(pool_environment["SANDBOX_POOL_TOKEN_CIPHERTEXT"])
    for context in (
        {"purpose": "sandbox-token", "pool_sandbox_id": "pool-" + "0" * 24},
        {"purpose": "sandbox-token", "conversation_id": sandbox_id},
    ):
        with pytest.raises(kms.exceptions.InvalidCiphertextException):
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
