"""Which repositories the service is willing to reach. No DNS: addresses come from an injected resolver."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from conversation_service.config import ServiceConfig
from conversation_service.logic.repositories import RepositoryResolver
from conversation_service.models.api import CreateConversationRequest, GitProvider
from conversation_service.models.errors import RepositoryNotAllowed

PUBLIC = "140.82.112.3"


class FakeDns:
    """Answers every host with a public address unless told otherwise; remembers what was asked."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[str] = []

    def __call__(self, host: str) -> Iterable[str]:
        self.asked.append(host)
        return self.answers.get(host, [PUBLIC])


def resolver(dns: FakeDns | None = None, **config: object) -> RepositoryResolver:
    settings = ServiceConfig.model_validate({"allow_local_repositories": False, **config})
    return RepositoryResolver(settings, resolve_addresses=dns or FakeDns())


NON_PUBLIC_ADDRESSES = [
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.10",
    "127.0.0.1",
    "127.1.2.3",
    "169.254.169.254",  # cloud metadata
    "169.254.170.2",  # ECS task metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fd00::1",
    "fc00::1",
    "fe80::1",
    "fe80::1%eth0",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:192.168.0.1",
]


# -- owner/repo through the provider ---------------------------------------------------------
@pytest.mark.parametrize(
    ("slug", "provider", "clone_url"),
    [
        ("owner/repo", None, "https://github.com/owner/repo.git"),
        ("owner/repo", GitProvider.GITHUB, "https://github.com/owner/repo.git"),
        ("owner/repo.git", GitProvider.GITHUB, "https://github.com/owner/repo.git"),
        ("group/sub/repo", GitProvider.GITLAB, "https://gitlab.com/group/sub/repo.git"),
        ("team/repo", GitProvider.BITBUCKET, "https://bitbucket.org/team/repo.git"),
        ("org/project/repo", GitProvider.AZURE_DEVOPS, "https://dev.azure.com/org/project/_git/repo"),
    ],
)
def test_owner_repo_resolves_through_the_provider(slug: str, provider: GitProvider | None, clone_url: str) -> None:
    dns = FakeDns()
    location = resolver(dns).locate(slug, provider)
    assert location.clone_url == clone_url
    assert location.git_provider == (provider or GitProvider.GITHUB).value
    assert location.name == "repo"
    assert dns.asked, "the provider host's addresses must be checked too"


@pytest.mark.parametrize("spelling", ["GITHUB", "github", "GitHub"])
def test_the_spec_spelling_of_the_provider_resolves_like_openhands_spelling(spelling: str) -> None:
    request = CreateConversationRequest.model_validate({"repository": "owner/repo", "git_provider": spelling})
    location = resolver().locate(request.repository or "", request.git_provider)
    assert location.clone_url == "https://github.com/owner/repo.git"
    assert location.git_provider == "github"


def test_full_https_urls_on_provider_hosts_are_kept_as_given() -> None:
    for url, provider in (
        ("https://github.com/owner/repo.git", "github"),
        ("https://github.com/owner/repo", "github"),
        ("https://gitlab.com/group/sub/repo.git", "gitlab"),
        ("https://bitbucket.org/team/repo.git", "bitbucket"),
        ("https://dev.azure.com/org/project/_git/repo", "azure_devops"),
    ):
        location = resolver().locate(url, None)
        assert (location.clone_url, location.git_provider) == (url, provider)
    assert resolver().locate("https://github.com/owner/repo.git", None).display_name == "owner/repo"


def test_enterprise_hosts_come_from_configuration() -> None:
    url = "https://git.corp.example.com/team/repo.git"
    with pytest.raises(RepositoryNotAllowed):
        resolver().locate(url, None)
    config = ServiceConfig.from_environment({"GIT_EXTRA_HOSTS": "git.corp.example.com, other.example.org"})
    location = RepositoryResolver(config, resolve_addresses=FakeDns()).locate(url, None)
    assert (location.clone_url, location.git_provider) == (url, "enterprise")


def test_provider_hosts_can_be_moved_to_an_enterprise_install() -> None:
    config = ServiceConfig.from_environment({"GIT_PROVIDER_HOSTS": '{"gitlab": "gitlab.corp.example.com"}'})
    located = RepositoryResolver(config, resolve_addresses=FakeDns())
    assert located.locate("team/repo", GitProvider.GITLAB).clone_url == "https://gitlab.corp.example.com/team/repo.git"
    assert located.locate("https://gitlab.corp.example.com/team/repo.git", None).git_provider == "gitlab"
    # The other providers keep their public hosts.
    assert located.locate("owner/repo", None).clone_url == "https://github.com/owner/repo.git"


# -- refused ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "repository",
    [
        "http://github.com/owner/repo.git",
        "git://github.com/owner/repo.git",
        "ssh://git@github.com/owner/repo.git",
        "git@github.com:owner/repo.git",
        "ftp://github.com/owner/repo.git",
        "https://user:password@github.com/owner/repo.git",
        "https://ghp_token@github.com/owner/repo.git",
        "https://github.com/owner/repo.git?ref=main",
        "https://github.com/owner/repo.git#main",
        "https://evil.example.com/owner/repo.git",
        "https://github.com.evil.example.com/owner/repo.git",
        "https://github.com/",
        "https://github.com/owner/../../repo.git",
        "owner/../repo",
        "https://localhost/owner/repo.git",
        "https://127.0.0.1/owner/repo.git",
        "http://127.0.0.1:8080/owner/repo.git",
        "https://[::1]/owner/repo.git",
        "https://169.254.169.254/latest/meta-data",
        "/srv/git/repo",
        "file:///srv/git/repo",
        "",
    ],
)
def test_refused_repositories(repository: str) -> None:
    with pytest.raises(RepositoryNotAllowed) as refused:
        resolver().locate(repository, None)
    assert refused.value.msg_id == "STATUS$GIT_REPOSITORY_NOT_ALLOWED"


@pytest.mark.parametrize("address", NON_PUBLIC_ADDRESSES)
def test_hosts_resolving_to_non_public_addresses_are_refused(address: str) -> None:
    config = {"git_extra_hosts": ["git.corp.example.com"]}
    for repository, host in (
        ("https://git.corp.example.com/team/repo.git", "git.corp.example.com"),
        ("owner/repo", "github.com"),  # even a provider host (DNS rebinding)
        ("https://github.com/owner/repo.git", "github.com"),
    ):
        dns = FakeDns({host: [PUBLIC, address]})  # one bad address among good ones is enough
        with pytest.raises(RepositoryNotAllowed):
            resolver(dns, **config).locate(repository, None)


def test_public_addresses_pass() -> None:
    for address in (PUBLIC, "8.8.8.8", "2606:4700::1111", "::ffff:140.82.112.3"):
        assert resolver(FakeDns({"github.com": [address]})).locate("owner/repo", None).git_provider == "github"


# -- the local stack ---------------------------------------------------------------------------
def test_loopback_and_local_paths_only_when_local_repositories_are_allowed(tmp_path: Path) -> None:
    local = tmp_path / "repo"
    local.mkdir()
    dns = FakeDns({"localhost": ["127.0.0.1"], "127.0.0.1": ["127.0.0.1"]})
    candidates = [str(local), f"file://{local}", "http://127.0.0.1:9418/owner/repo.git", "http://localhost:8000/repo"]
    for repository in candidates:
        with pytest.raises(RepositoryNotAllowed):
            resolver(dns).locate(repository, None)
    allowed = resolver(dns, allow_local_repositories=True)
    assert allowed.locate(str(local), None).clone_url == str(local)
    assert allowed.locate(f"file://{local}", None).clone_url == str(local)
    assert (
        allowed.locate("http://127.0.0.1:9418/owner/repo.git", None).clone_url == "http://127.0.0.1:9418/owner/repo.git"
    )
    # Allowing loopback does not open private networks or metadata.
    with pytest.raises(RepositoryNotAllowed):
        allowed.locate("http://169.254.169.254/latest/meta-data", None)
    with pytest.raises(RepositoryNotAllowed):
        resolver(FakeDns({"localhost": ["10.0.0.5"]}), allow_local_repositories=True).locate(
            "http://localhost/repo", None
        )
