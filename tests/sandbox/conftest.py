"""Fixtures for the sandbox bootstrap tests; puts ``sandbox/`` on ``sys.path``."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SANDBOX_DIR = Path(__file__).resolve().parents[2] / "sandbox"
if str(SANDBOX_DIR) not in sys.path:
    sys.path.insert(0, str(SANDBOX_DIR))

from sandbox_harness import UID_PAIRS, Secrets, processes_inside, release_uid_pairs  # noqa: E402


@pytest.fixture
def sandbox_secrets() -> Secrets:
    return Secrets.random()


@pytest.fixture(scope="session", autouse=True)
def no_sandbox_uid_left() -> Iterator[None]:
    yield
    release_uid_pairs()


@pytest.fixture
def conversation_id() -> str:
    return secrets.token_hex(16)


@pytest.fixture(autouse=True)
def nothing_left_running(tmp_path: Path) -> Iterator[None]:
    """Fail a test that leaves any process working inside its temporary directory."""
    # Pairs of sandboxes shared by a module are made before this runs: they outlive the test.
    shared = len(UID_PAIRS)
    try:
        yield
    finally:
        release_uid_pairs(since=shared)  # the uids' processes die with the sandbox, as on Fargate
    deadline = time.monotonic() + 5
    leftovers = processes_inside(tmp_path)
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.1)
        leftovers = processes_inside(tmp_path)
    assert not leftovers, f"processes left running: {leftovers}"
