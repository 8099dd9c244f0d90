"""moto-backed AWS for the tests, with every resource created from template.yaml."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Before anything creates a boto3 client: no real credentials, ever.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "OpenHandsConversations",
        "POWERTOOLS_DEV": "false",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)

from conversation_service import services
from conversation_service.dal import aws
from moto import mock_aws

from devstack.template_resources import StackResources, provision


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[StackResources]:
    """A fresh moto account holding the template's resources; env set as for ApiFunction."""
    with mock_aws():
        aws.client.cache_clear()
        resources = provision("test")
        for key, value in resources.functions["ApiFunction"].environment.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("ALLOW_LOCAL_REPOSITORIES", "true")
        services.reset()
        yield resources
        aws.client.cache_clear()
        services.reset()
