"""Atomic claims: many LaunchSandbox steps racing for a few idle sandboxes each get a different
one or none (a cold start). Runs against moto in a process of its own serving one request at a
time (tests/support/serial_moto.py), so each conditional write is atomic as DynamoDB's is,
while the claims interleave their calls freely from threads."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.config import Config
from conversation_service import services
from conversation_service.dal import aws
from conversation_service.dal.pool import PoolStore
from conversation_service.logic.clock import now_epoch_ms
from conversation_service.models.pool import PoolState

from devstack.template_resources import provision
from tests.support.serial_moto import serial_moto

CLAIMS = 60
IDLE = 5


@pytest.fixture
def serial_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with serial_moto() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        aws.client.cache_clear()
        resources = provision("poolrace", {"PoolTargetIdle": str(IDLE)})
        for key, value in resources.functions["LaunchSandboxFunction"].environment.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("POOL_RECONCILER_FUNCTION", "")
        monkeypatch.setattr(aws, "_CLIENT_CONFIG", Config(retries={"mode": "standard", "max_attempts": 10}))
        services.reset()
        yield
    aws.client.cache_clear()
    services.reset()


@pytest.mark.usefixtures("serial_pool")
def test_many_claims_few_idle_each_sandbox_is_claimed_at_most_once() -> None:
    pool = services.warm_pool()
    store = PoolStore(services.get_config().pool_table)
    report = pool.reconcile()
    assert len(report.launched) == IDLE
    for sandbox_id in report.launched:
        assert store.mark_idle(sandbox_id, now_epoch_ms())
    conversations = [uuid.uuid4().hex for _ in range(CLAIMS)]

    def claim(conversation_id: str) -> tuple[str, str | None]:
        claimed = pool.claim(conversation_id, {"CONVERSATION_ID": conversation_id})
        return conversation_id, claimed.sandbox_id if claimed else None

    with ThreadPoolExecutor(max_workers=30) as executor:
        results = dict(executor.map(claim, conversations))

    winners = {conversation: sandbox for conversation, sandbox in results.items() if sandbox}
    assert len(winners) == IDLE, "every idle sandbox is claimed once, the other claims start cold"
    assert Counter(winners.values()).most_common(1)[0][1] == 1, "a sandbox was claimed twice"
    for conversation_id, sandbox_id in winners.items():
        item = store.get(sandbox_id)
        assert item is not None and item.pool_status is PoolState.CLAIMED
        assert item.conversation_id == conversation_id and item.assignment == {"CONVERSATION_ID": conversation_id}
    assert store.live(PoolState.IDLE) == []
