"""The warm pool suite: moto in process (its Step Functions engine runs the real state machine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conversation_service import services
from conversation_service.dal import aws
from moto import mock_aws

from tests.integration.conftest import MOTO_CONFIG


@pytest.fixture
def moto() -> Iterator[None]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        yield
    aws.client.cache_clear()
    services.reset()
