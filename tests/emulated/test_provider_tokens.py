"""A provider token goes only to its own host (issue 10): the provider is the repository host's,
a contradicting `git_provider` is refused, enterprise tokens are kept per host, and only the
default port may receive a token."""

from __future__ import annotations

import pytest
from conversation_service.config import ServiceConfig
from conversation_service.logic.repositories import RepositoryResolver, provider_token_key
from conversation_service.models.api import GitProvider
from conversation_service.models.errors import GitProviderMismatch, RepositoryNotAllowed

from tests.emulated.support import create, save_settings

ENTERPRISE_HOSTS = "git.one.example, git.two.example"


def resolver(**config: str) -> RepositoryResolver:
    settings = ServiceConfig.from_environment({"GIT_EXTRA_HOSTS": ENTERPRISE_HOSTS, **config})
    return RepositoryResolver(settings, resolve_addresses=lambda host: ["140.82.112.3"])


@pytest.mark.parametrize(
    ("repository", "git_provider"),
    [
        ("https://github.com/owner/repo.git", GitProvider.GITLAB),
        ("https://gitlab.com/group/repo.git", GitProvider.GITHUB),
        ("https://git.one.example/team/repo.git", GitProvider.GITHUB),  # the github token to an enterprise host
        ("https://github.com/owner/repo.git", GitProvider.ENTERPRISE),
    ],
)
def test_a_git_provider_that_contradicts_the_host_is_refused(repository: str, git_provider: GitProvider) -> None:
    with pytest.raises(GitProviderMismatch, match="does not match the repository's host"):
        resolver().locate(repository, git_provider)


def test_the_provider_and_the_token_key_come_from_the_host() -> None:
    located = resolver()
    assert located.locate("https://github.com/o/r.git", GitProvider.GITHUB).token_key == "github"
    assert located.locate("https://github.com/o/r.git", None).token_key == "github"
    one = located.locate("https://git.one.example/team/repo.git", None)
    two = located.locate("https://GIT.TWO.example/team/repo.git", GitProvider.ENTERPRISE)
    assert (one.git_provider, one.token_key) == ("enterprise", "enterprise:git.one.example")
    assert (two.git_provider, two.token_key) == ("enterprise", "enterprise:git.two.example")
    assert provider_token_key("gitlab", "gitlab.com") == "gitlab"


@pytest.mark.parametrize(
    "repository",
    [
        "https://github.com:8443/owner/repo.git",
        "https://git.one.example:444/team/repo.git",
        "https://github.com:80/o/r",
    ],
)
def test_only_the_default_port_may_receive_a_token(repository: str) -> None:
    with pytest.raises(RepositoryNotAllowed, match="default port"):
        resolver().locate(repository, None)
    assert resolver().locate("https://github.com:443/owner/repo.git", None).git_provider == "github"


def test_the_api_answers_a_contradicting_provider_with_the_error_body(user: str) -> None:
    refused = create({"repository": "https://github.com/owner/repo.git", "git_provider": "gitlab"})
    assert refused.status == 400
    assert refused.body["status"] == "error" and refused.body["msg_id"] == "STATUS$GIT_REPOSITORY_NOT_ALLOWED"
    assert "does not match" in refused.body["message"]


def test_enterprise_tokens_are_stored_per_host(user: str, service_env) -> None:  # type: ignore[no-untyped-def]
    service_env(GIT_EXTRA_HOSTS=ENTERPRISE_HOSTS)
    saved = save_settings({"enterprise_tokens": {"git.one.example": "token-for-one"}})
    assert saved.status == 200, saved.body
    assert saved.body["provider_tokens_set"] == {"enterprise:git.one.example": True}
    assert "token-for-one" not in str(saved.body)
    refused = save_settings({"provider_tokens": {"enterprise": "which-host?"}})
    assert (refused.status, refused.body["status"]) == (400, "error")
    assert "per host" in refused.body["message"]
    unknown = save_settings({"enterprise_tokens": {"git.elsewhere.example": "t"}})
    assert unknown.status == 400 and "not one of the configured enterprise git hosts" in unknown.body["message"]
    cleared = save_settings({"enterprise_tokens": {"git.one.example": ""}})
    assert cleared.body["provider_tokens_set"] == {}
