"""Fixtures of the unit tests: the service's logic on in-memory ports (tests/support), no AWS
emulation at all. What needs moto lives in tests/emulated."""

from __future__ import annotations

import pytest

from tests.support.in_memory import InMemoryService


@pytest.fixture
def service() -> InMemoryService:
    """Every port in memory, nobody configured yet."""
    return InMemoryService()


@pytest.fixture
def user(service: InMemoryService) -> str:
    """`user-1`, with an LLM model and key saved through the settings logic."""
    service.configure_user("user-1")
    return "user-1"
