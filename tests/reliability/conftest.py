"""Fixtures of the reliability suite.

`api_stack`: the template's resources on in-process moto (one account per test module, tables
emptied before each test), the ApiFunction's environment, and the real handler whose DNS and git
remote are answered in-process (no test reaches the internet). The workflow tests build their
own stacks with tests/integration's WorkflowHarness (moto's Step Functions engine).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conversation_service import services
from conversation_service.adapters.git_remote import RemoteRefs
from conversation_service.dal import aws
from moto import mock_aws

from devstack.template_resources import StackResources, provision
from tests.support.api_gateway import FakeLambdaContext, api_event
from tests.support.dynamodb_items import active_counter, empty_tables, scan_all

LLM_KEY = "sk-reliability-LLM-secret-5e1f"
GIT_TOKEN = "ghp_reliability_git_secret_77d0"
PUBLIC_ADDRESS = "140.82.112.3"
REFS = RemoteRefs(branches={"main": "a" * 40, "develop": "b" * 40}, default_branch="main")


def public_dns(host: str) -> Iterable[str]:
    return [PUBLIC_ADDRESS]


def remote_refs(url: str, **_: Any) -> RemoteRefs:
    return REFS


def install_stub_remote(sleep: Callable[[float], None] = lambda _: None) -> Any:
    """The ApiFunction's routes get a ConversationService whose DNS and git remote answer in-process."""
    import api.app as api_app
    from conversation_service.config import get_config
    from conversation_service.dal.context_store import ContextStore
    from conversation_service.logic.conversations import ConversationService
    from conversation_service.logic.repositories import RepositoryResolver, RepositoryVerifier

    config = get_config()
    service = ConversationService(
        config,
        services.conversation_store(),
        services.user_store(),
        ContextStore(config.context_bucket),
        resolver=RepositoryResolver(config, resolve_addresses=public_dns),
        verifier=RepositoryVerifier(config, read_refs=remote_refs),
        sleep=sleep,
    )
    api_app.conversation_service = lambda: service  # type: ignore[attr-defined]
    return service


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class ApiStack:
    resources: StackResources

    @property
    def conversations_table(self) -> str:
        return self.resources.physical["ConversationsTable"]

    @property
    def users_table(self) -> str:
        return self.resources.physical["UsersTable"]

    def call(self, event: dict[str, Any]) -> Answer:
        from api.app import lambda_handler

        response = lambda_handler(event, FakeLambdaContext())
        headers = {key.lower(): value for key, value in (response.get("headers") or {}).items()}
        for key, values in (response.get("multiValueHeaders") or {}).items():
            headers.setdefault(key.lower(), values[0])
        raw = response.get("body") or ""
        return Answer(response["statusCode"], json.loads(raw) if raw else None, headers)

    def api(self, method: str, path: str, body: Any = None, *, user_id: str = "user-1", **kw: Any) -> Answer:
        return self.call(api_event(method, path, body, user_id=user_id, **kw))

    def configure_user(self, user_id: str = "user-1") -> None:
        settings = {
            "llm_model": "anthropic/claude-sonnet-4",
            "llm_api_key": LLM_KEY,
            "provider_tokens": {"github": GIT_TOKEN},
        }
        answer = self.api("POST", "/api/settings", settings, user_id=user_id)
        assert answer.status == 200, answer.body

    def items(self) -> list[dict[str, Any]]:
        return scan_all(self.conversations_table)

    def active_counter(self, user_id: str = "user-1") -> int:
        return active_counter(self.users_table, user_id)

    def assert_counter_matches_items(self) -> None:
        """Every user's QUOTA active_count equals the number of its STARTING/RUNNING items."""
        active: dict[str, int] = {}
        for item in self.items():
            if item["conversation_status"]["S"] in ("STARTING", "RUNNING"):
                user = item["user_id"]["S"]
                active[user] = active.get(user, 0) + 1
        users = {
            item["pk"]["S"].removeprefix("USER#") for item in scan_all(self.users_table) if item["sk"]["S"] == "QUOTA"
        } | set(active)
        for user in users:
            assert self.active_counter(user) == active.get(user, 0), f"{user}: counter drifted from the items"


@pytest.fixture(scope="module")
def _module_moto() -> Iterator[StackResources]:
    with mock_aws():
        aws.client.cache_clear()
        yield provision("rel")
    aws.client.cache_clear()
    services.reset()


@pytest.fixture
def api_stack(_module_moto: StackResources, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiStack]:
    aws.client.cache_clear()
    empty_tables(_module_moto, bucket=False)
    for key, value in _module_moto.functions["ApiFunction"].environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    services.reset()
    import api.app as api_app

    monkeypatch.setattr(api_app, "conversation_service", api_app.conversation_service)
    install_stub_remote()
    yield ApiStack(_module_moto)
    aws.client.cache_clear()
    services.reset()


Factory = Callable[..., Any]
