"""A provider token goes only to its own host (issue 10): the provider is the repository host's,
a contradicting `git_provider` is refused, and only the default port may receive a token (the
API's answers and stored enterprise tokens: tests/emulated/test_provider_tokens.py)."""

from __future__ import annotations

import pytest
from conversation_service.config import ServiceConfig
from conversation_service.logic.repositories import RepositoryResolver, provider_token_key
from conversation_service.models.api import GitProvider
from conversation_service.models.errors import GitProviderMismatch, RepositoryNotAllowed

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
