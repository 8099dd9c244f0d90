"""Fixtures of the unit tests: the stack (moto with the template's resources), a configured
user, real git repositories, moto servers for the race, and a way to change the configuration."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from conversation_service import services
from conversation_service.dal import aws
from moto import mock_aws

from devstack.template_resources import StackResources, provision
from tests.emulated.support import configure_user
from tests.support.dynamodb_items import empty_tables
from tests.support.git_repositories import make_repository
from tests.support.serial_moto import serial_moto

_stack_names = (f"unit{number}" for number in itertools.count())
_provisioned: list[StackResources] = []


@pytest.fixture(scope="package")
def _moto() -> Iterator[None]:
    with mock_aws():
        yield


def _intact(resources: StackResources) -> bool:
    tables = set(boto3.client("dynamodb").list_tables()["TableNames"])
    ours = {resources.physical[name] for name in ("ConversationsTable", "UsersTable", "IdempotencyTable")}
    return ours <= tables


@pytest.fixture
def stack(_moto: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[StackResources]:
    """moto holding the template's resources, the environment of the ApiFunction, local
    repositories allowed; made affordable: moto starts once for tests/emulated and each test gets
    empty tables and bucket instead of a new account (1-2 s per test otherwise).
    A test that deletes a table gets a freshly provisioned stack after it."""
    aws.client.cache_clear()
    if not _provisioned or not _intact(_provisioned[-1]):
        _provisioned.append(provision(next(_stack_names)))
    resources = _provisioned[-1]
    empty_tables(resources)
    yield from _as_the_api_function(resources, monkeypatch)


def _as_the_api_function(resources: StackResources, monkeypatch: pytest.MonkeyPatch) -> Iterator[StackResources]:
    """The ApiFunction's environment (local repositories allowed) and services built for it."""
    for key, value in resources.functions["ApiFunction"].environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ALLOW_LOCAL_REPOSITORIES", "true")
    services.reset()
    yield resources
    aws.client.cache_clear()
    services.reset()


@pytest.fixture
def tables(stack: StackResources) -> dict[str, str]:
    return {
        "conversations": stack.physical["ConversationsTable"],
        "users": stack.physical["UsersTable"],
        "idempotency": stack.physical["IdempotencyTable"],
    }


@pytest.fixture
def service_env(stack: StackResources, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set service environment variables (as the template would) and rebuild the services."""

    def apply(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        services.reset()

    return apply


@pytest.fixture
def user(stack: StackResources) -> str:
    """`user-1`, with an LLM model and key saved through POST /api/settings."""
    configure_user("user-1")
    return "user-1"


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A real repository with branches main (default) and feature/login; (path, branch -> sha)."""
    path = tmp_path / "repo"
    return path, make_repository(path, ("main", "feature/login"))


# -- the template's resources behind a moto server, for the concurrency race ------------------
@pytest.fixture(scope="module")
def serial_moto_server() -> Iterator[str]:
    """tests/support/serial_moto.py in its own process: moto handling one request at a time, so
    every AWS call is atomic (as DynamoDB's are) and the server does not compete with the test's
    threads for the GIL. Yields its URL."""
    with serial_moto() as url:
        yield url


@pytest.fixture
def serial_server_stack(serial_moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[StackResources]:
    """The template's resources, freshly named, on the serial moto server; env as for ApiFunction."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", serial_moto_server)
    aws.client.cache_clear()
    resources = provision(next(_stack_names))
    yield from _as_the_api_function(resources, monkeypatch)
