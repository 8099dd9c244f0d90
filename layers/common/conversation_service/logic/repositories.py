"""Turns the request's `repository` into a clone URL we are willing to reach, then checks it.

Rules (the service must not be a way to reach internal addresses):
- `owner/repo` resolves through the provider's configured host over https.
- A URL must be https, without credentials in it, on a configured provider or enterprise host.
- Every address the host resolves to must be public: private, loopback, link-local
  (cloud metadata), multicast, reserved and unspecified addresses are refused.
- Only the local stack (`allow_local_repositories`) may use loopback hosts, http/git
  schemes and local paths.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from conversation_service.adapters.git_remote import RemoteRefs, list_remote_refs
from conversation_service.config import ServiceConfig
from conversation_service.logic.validation import validate_branch_name
from conversation_service.models.api import GitProvider
from conversation_service.models.domain import ResolvedRepository
from conversation_service.models.errors import (
    BranchNotFound,
    GitProviderMismatch,
    RemoteAccessDenied,
    RemoteUnavailable,
    RepositoryNotAccessible,
    RepositoryNotAllowed,
)

_SLUG = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){1,4}$")
_PROVIDER_USERNAMES = {
    "github": "x-access-token",
    "gitlab": "oauth2",
    "bitbucket": "x-token-auth",
    "azure_devops": "pat",
    "enterprise": "git",
}

Resolver = Callable[[str], Iterable[str]]
RefsReader = Callable[..., RemoteRefs]


def provider_username(git_provider: str) -> str:
    """The user name that goes with a provider token over https."""
    return _PROVIDER_USERNAMES.get(git_provider, "git")


def provider_token_key(git_provider: str, host: str | None) -> str:
    """Where the user's token for this repository is kept: per provider, and per host for
    enterprise hosts (a token for one enterprise host is never sent to another)."""
    if git_provider == GitProvider.ENTERPRISE.value:
        return f"{GitProvider.ENTERPRISE.value}:{(host or '').lower()}"
    return git_provider


def clone_url_host(clone_url: str) -> str:
    try:
        return (urlsplit(clone_url).hostname or "").lower()
    except ValueError:
        return ""


@dataclass(frozen=True)
class RepositoryLocation:
    clone_url: str
    display_name: str
    name: str
    git_provider: str
    token_key: str = ""
    """The user's secret that may be sent to this repository's host (provider_token_key)."""


def resolve_host_addresses(host: str) -> list[str]:
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})
    except OSError as error:
        raise RepositoryNotAccessible(f"Repository host {host!r} could not be resolved") from error


# IPv6 forms that carry an IPv4 address in their last 32 bits, which Python's `is_global` calls
# public whatever that IPv4 address is: NAT64 (64:ff9b::10.0.0.1 reaches 10.0.0.1 through a NAT64
# gateway), IPv4-translated (SIIT) and the deprecated IPv4-compatible form. The IPv4 address decides.
_IPV4_CARRYING_NETWORKS = tuple(
    ipaddress.IPv6Network(network) for network in ("64:ff9b::/96", "::ffff:0:0:0/96", "::/96")
)


def _address_problem(address: str, allow_loopback: bool) -> str | None:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    carries_ipv4 = isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in _IPV4_CARRYING_NETWORKS)
    if carries_ipv4 and not (ip.is_loopback or ip.is_unspecified):
        ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local (metadata) address"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "a non-public address"
    return None


def _repository_name(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    name = name.removesuffix(".git") or "repository"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name).lstrip(".") or "repository"


class RepositoryResolver:
    def __init__(self, config: ServiceConfig, resolve_addresses: Resolver = resolve_host_addresses) -> None:
        self._config = config
        self._resolve_addresses = resolve_addresses

    def locate(self, repository: str, git_provider: GitProvider | None) -> RepositoryLocation:
        repository = repository.strip()
        is_slug = bool(_SLUG.match(repository)) and ".." not in repository.split("/")
        if self._config.allow_local_repositories:
            if rewritten := self._rewritten(repository, git_provider, is_slug):
                return rewritten
            if repository.startswith("/") or repository.startswith("file://"):
                return self._locate_local_path(repository)
        if is_slug:
            return self._locate_slug(repository, git_provider)
        return self._locate_url(repository, git_provider)

    def _rewritten(self, repository: str, git_provider: GitProvider | None, is_slug: bool) -> RepositoryLocation | None:
        """Local stack only: `url.<base>.insteadOf`-style rewrites (github.com -> the local git server)."""
        canonical = self._slug_url(repository, git_provider) if is_slug else repository
        for prefix, replacement in self._config.git_url_rewrites.items():
            if canonical.startswith(prefix):
                target = self._locate_url(replacement + canonical[len(prefix) :], git_provider)
                original_host = (urlsplit(canonical).hostname or "").lower()
                provider = self._provider_of(original_host, git_provider)
                display = repository.removesuffix(".git") if is_slug else canonical
                if not is_slug and original_host == self._config.git_provider_hosts.get(provider):
                    display = urlsplit(canonical).path.strip("/").removesuffix(".git")
                token_key = provider_token_key(provider, original_host)
                return RepositoryLocation(target.clone_url, display, target.name, provider, token_key)
        return None

    def _slug_url(self, slug: str, git_provider: GitProvider | None) -> str:
        provider = (git_provider or GitProvider.GITHUB).value
        host = self._config.git_provider_hosts.get(provider)
        if host is None:
            raise RepositoryNotAllowed(
                f"No host is configured for git provider {provider!r}; give the repository as a full https URL"
            )
        if provider == GitProvider.AZURE_DEVOPS.value:
            parts = slug.split("/")
            if len(parts) != 3:
                raise RepositoryNotAllowed("Azure DevOps repositories are written organization/project/repository")
            return f"https://{host}/{parts[0]}/{parts[1]}/_git/{parts[2]}"
        return f"https://{host}/{slug.removesuffix('.git')}.git"

    def _locate_slug(self, slug: str, git_provider: GitProvider | None) -> RepositoryLocation:
        provider = (git_provider or GitProvider.GITHUB).value
        url = self._slug_url(slug, git_provider)
        host = (urlsplit(url).hostname or "").lower()
        self._check_host_addresses(host, allow_loopback=False)
        return RepositoryLocation(
            url, slug.removesuffix(".git"), _repository_name(slug), provider, provider_token_key(provider, host)
        )

    def _locate_local_path(self, repository: str) -> RepositoryLocation:
        path = Path(repository.removeprefix("file://"))
        if not path.is_absolute() or not path.exists():
            raise RepositoryNotAccessible(f"Local repository {repository!r} does not exist")
        return RepositoryLocation(str(path), str(path), _repository_name(str(path)), "local", "local")

    def _locate_url(self, repository: str, git_provider: GitProvider | None) -> RepositoryLocation:
        try:
            parts = urlsplit(repository)
            port = parts.port
        except ValueError as error:
            raise RepositoryNotAllowed("Repository must be owner/repo or an https URL") from error
        host = (parts.hostname or "").lower()
        local = self._config.allow_local_repositories
        allowed_schemes = {"https", "http", "git"} if local else {"https"}
        if parts.scheme not in allowed_schemes or not host:
            raise RepositoryNotAllowed("Repository must be owner/repo or an https URL")
        if parts.username or parts.password:
            raise RepositoryNotAllowed("Repository URL must not contain credentials; store tokens in settings")
        if parts.query or parts.fragment:
            raise RepositoryNotAllowed("Repository URL must not have a query or fragment")
        if ".." in parts.path.split("/") or len(parts.path.strip("/")) == 0:
            raise RepositoryNotAllowed("Repository URL must name a repository path")
        loopback_ok = local and self._is_loopback_host(host)
        if host not in self._config.allowed_git_hosts and not loopback_ok:
            raise RepositoryNotAllowed(f"Repository host {host!r} is not an allowed git provider host")
        # The user's token goes to this URL: only the scheme's default port of the allowed host.
        if port is not None and port != {"https": 443, "http": 80, "git": 9418}[parts.scheme] and not loopback_ok:
            raise RepositoryNotAllowed("Repository URL must use the host's default port")
        provider = self._provider_of(host, git_provider, loopback=loopback_ok)
        self._check_host_addresses(host, allow_loopback=loopback_ok)
        slug = parts.path.strip("/").removesuffix(".git")
        is_provider_host = host == self._config.git_provider_hosts.get(provider) and port is None
        display_name = slug if is_provider_host and _SLUG.match(slug) else repository
        return RepositoryLocation(
            repository, display_name, _repository_name(parts.path), provider, provider_token_key(provider, host)
        )

    def _provider_of(self, host: str, git_provider: GitProvider | None, *, loopback: bool = False) -> str:
        """The provider is the host's; a `git_provider` that names another one is refused, so a
        provider's token never goes to another provider's (or an enterprise) host."""
        provider = self._provider_for_host(host)
        if git_provider is None or git_provider.value == provider:
            return provider
        if loopback:  # the local stack's own git server stands in for any provider
            return git_provider.value
        raise GitProviderMismatch(
            f"git_provider {git_provider.value!r} does not match the repository's host {host!r} "
            f"({provider}); leave git_provider out or give a repository on a {git_provider.value} host"
        )

    def _provider_for_host(self, host: str) -> str:
        for provider, provider_host in self._config.git_provider_hosts.items():
            if host == provider_host:
                return provider
        return GitProvider.ENTERPRISE.value

    def _is_loopback_host(self, host: str) -> bool:
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def _check_host_addresses(self, host: str, *, allow_loopback: bool) -> None:
        for address in self._resolve_addresses(host):
            if problem := _address_problem(address, allow_loopback):
                raise RepositoryNotAllowed(f"Repository host {host!r} resolves to {problem}")


class RepositoryVerifier:
    """Checks the user can read the repository and the branch exists; records the commit."""

    def __init__(self, config: ServiceConfig, read_refs: RefsReader = list_remote_refs) -> None:
        self._timeout = config.git_timeout_seconds
        self._read_refs = read_refs

    def verify(self, location: RepositoryLocation, branch: str | None, token: str | None) -> ResolvedRepository:
        if branch is not None:
            validate_branch_name(branch)
        try:
            refs = self._read_refs(
                location.clone_url,
                username=provider_username(location.git_provider),
                password=token,
                timeout=self._timeout,
            )
        except RemoteAccessDenied as error:
            raise RepositoryNotAccessible(
                f"Repository {location.display_name} was not found or your git token cannot read it"
            ) from error
        except RemoteUnavailable as error:
            raise RepositoryNotAccessible(
                f"Repository {location.display_name} could not be reached ({error})"
            ) from error
        chosen = branch or refs.default_branch or ("main" if "main" in refs.branches else None)
        if chosen is None or chosen not in refs.branches:
            if branch is None:
                raise BranchNotFound(f"Repository {location.display_name} has no default branch (is it empty?)")
            raise BranchNotFound(f"Branch {branch!r} does not exist in {location.display_name}")
        return ResolvedRepository(
            display_name=location.display_name,
            clone_url=location.clone_url,
            name=location.name,
            git_provider=location.git_provider,
            branch=chosen,
            branch_requested=branch is not None,
            commit=refs.branches[chosen],
        )
