"""Property-based tests of the id, branch and repository-URL rules, past what tests/unit covers
(ASCII ids and branches, the plain private/loopback/metadata literals, one bad DNS answer):
unicode and very long input, numeric IP spellings resolved by the real resolver, IPv6 forms that
carry an IPv4 address, userinfo and parser confusion, IDNA look-alikes, trailing dots, and DNS
answers mixing public and private addresses."""

from __future__ import annotations

import ipaddress
import os
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import pytest
import urllib3
from conversation_service.config import ServiceConfig
from conversation_service.logic.repositories import RepositoryResolver, resolve_host_addresses
from conversation_service.logic.validation import branch_name_problem, validate_conversation_id
from conversation_service.models.errors import InvalidConversationId, RepositoryNotAccessible, RepositoryNotAllowed
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.support.git_repositories import git_branch_oracle

PUBLIC = "140.82.112.3"
TRICKY_CHARACTERS = (
    "./\\%:@~^*?[ -_"
    "\u202e\u200b\u200d\ufeff\u00a0\u2028\u2029\u0085\u009b"  # bidi override, zero-width, NBSP, separators, C1
    "\uff0e\uff0f\u2024\u2025\u3002\u2215\u29f8"  # fullwidth dot/solidus, one/two dot leaders, ideographic stop
    "é\u0301ßİ🙂"
)


# -- conversation ids ----------------------------------------------------------------------------
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(TRICKY_CHARACTERS), max_size=130))
@example("%2e%2e%2f")
@example("\u2025")
@example("a\u0085b")
def test_an_accepted_id_is_one_path_segment_and_one_key_segment(conversation_id: str) -> None:
    try:
        validate_conversation_id(conversation_id)
    except InvalidConversationId as refused:
        assert refused.msg_id == "ERROR$INVALID_CONVERSATION_ID"
        assert refused.message.startswith("Invalid conversation ID: ")
        return
    assert 0 < len(conversation_id) <= 100
    # Never above its parent directory ("." is an id the spec allows: it names the parent itself,
    # harmless since path ids are only ever looked up, and generated ids are hex).
    joined = os.path.normpath(f"/workspace/{conversation_id}")
    assert joined == "/workspace" or PurePosixPath(joined).parent == PurePosixPath("/workspace"), joined
    assert len(f"conversations/{conversation_id}/context.json".split("/")) == 3, "one S3 key segment"
    assert not any(ord(char) < 32 or ord(char) == 127 for char in conversation_id)


@pytest.mark.parametrize("length", [101, 10_000, 1_000_000])
def test_very_long_ids_are_refused_for_their_length(length: int) -> None:
    with pytest.raises(InvalidConversationId, match="longer than 100"):
        validate_conversation_id("a" * length)


# -- branch names: git itself is the oracle, now with unicode --------------------------------
@pytest.fixture(scope="module")
def git_accepts(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], bool]:
    """`git check-ref-format --branch` run inside an empty repository, with no user config."""
    return git_branch_oracle(tmp_path_factory.mktemp("oracle"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(alphabet=st.sampled_from(TRICKY_CHARACTERS + "ab/.@{"), min_size=1, max_size=60))
@example(name="feature/\u202egnp.exe")
@example(name="\u2025/x")
@example(name="release\u3002v1")
@example(name="a\u0085b")
def test_unicode_branch_names_follow_git(git_accepts, name: str) -> None:
    assume("\x00" not in name)
    assert (branch_name_problem(name) is None) == git_accepts(name), repr(name)


def test_very_long_branch_names_are_refused_without_effort() -> None:
    assert branch_name_problem("a" * 1_000_000) == "it is longer than 255 characters"
    assert branch_name_problem("../" * 50) is not None


# -- repository URLs -------------------------------------------------------------------------------
class RecordingDns:
    def __init__(self, answers: Iterable[str] = (PUBLIC,)) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        return self.answers


def resolver(dns=None, **config: object) -> RepositoryResolver:
    settings_ = ServiceConfig.model_validate({"allow_local_repositories": False, **config})
    return RepositoryResolver(settings_, resolve_addresses=dns or RecordingDns())


# Numeric spellings of loopback, private, link-local (metadata) and unspecified IPv4 addresses
# that the C resolver (inet_aton) accepts: decimal, hex, octal, short forms, mixed.
NUMERIC_HOSTS = [
    "127.0.0.1", "127.1", "0x7f.1", "0x7f000001", "2130706433", "0177.0.0.1", "017700000001", "0x7f.0.0.0x1",
    "10.1", "0xa000001", "167772161", "012.0.0.1",
    "192.168.1.1", "3232235777", "0xc0a80101",
    "169.254.169.254", "2852039166", "0xa9fea9fe", "0xa9.0xfe.0xa9.0xfe", "0251.0376.0251.0376", "169.254.43518",
    "169.254.170.2", "0",
    "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:127.0.0.1]", "[::ffff:169.254.169.254]",
    "[::127.0.0.1]", "[::ffff:0:127.0.0.1]", "[64:ff9b::127.0.0.1]", "[64:ff9b::10.0.0.1]",
    "[64:ff9b::169.254.169.254]", "[2002:7f00:1::1]", "[fe80::1]", "[fd00::1]",
]  # fmt: skip


@pytest.mark.parametrize("host", NUMERIC_HOSTS)
@pytest.mark.parametrize("scheme", ["https"])
def test_numeric_spellings_of_internal_addresses_are_refused_even_when_allowlisted(scheme: str, host: str) -> None:
    """Even an operator allowlisting such a host (GIT_EXTRA_HOSTS) cannot open it: the address the
    real resolver (getaddrinfo, numeric forms need no DNS) returns is what is checked."""
    bare = host.strip("[]")
    located = RepositoryResolver(
        ServiceConfig.model_validate({"allow_local_repositories": False, "git_extra_hosts": [bare.lower()]}),
        resolve_addresses=resolve_host_addresses,
    )
    with pytest.raises((RepositoryNotAllowed, RepositoryNotAccessible)):
        located.locate(f"{scheme}://{host}/owner/repo.git", None)
    # Without the allowlist they are refused before any resolution.
    dns = RecordingDns()
    with pytest.raises(RepositoryNotAllowed):
        resolver(dns).locate(f"https://{host}/owner/repo.git", None)
    assert dns.asked == []


ADDRESS_POOL = [
    PUBLIC, "8.8.8.8", "2606:4700::1111", "::ffff:140.82.112.3", "64:ff9b::808:808",
    "10.0.0.1", "172.16.5.4", "192.168.0.1", "127.0.0.1", "169.254.169.254", "169.254.170.2", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fd00::1", "fe80::1", "fe80::1%eth0",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1", "::ffff:0:a00:1",
    "::a00:1", "2002:a00:1::1", "2001:db8::1", "100::1",
]  # fmt: skip


def is_public(address: str) -> bool:
    """The oracle: public iff the address, and any IPv4 address it carries, is globally reachable."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif ip.sixtofour:
            ip = ip.sixtofour
        elif any(ip in ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "::ffff:0:0:0/96")) or (
            ip in ipaddress.IPv6Network("::/96") and int(ip) > 1
        ):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return bool(ip.is_global) and not ip.is_multicast


@settings(max_examples=300, deadline=None)
@given(answers=st.lists(st.sampled_from(ADDRESS_POOL), min_size=1, max_size=6))
def test_a_host_is_reachable_only_if_every_address_it_resolves_to_is_public(answers: list[str]) -> None:
    for repository in ("owner/repo", "https://github.com/owner/repo.git"):
        dns = RecordingDns(answers)
        try:
            resolver(dns).locate(repository, None)
        except RepositoryNotAllowed:
            accepted = False
        else:
            accepted = True
        assert accepted == all(is_public(address) for address in answers), answers
        assert dns.asked == ["github.com"]


HOST_SPELLINGS = st.sampled_from(
    [
        "github.com", "GITHUB.COM", "github.com.", "github.com..", "www.github.com", "github.com.evil.com",
        "g\u0456thub.com",  # Cyrillic i
        "github\u3002com", "github\uff0ecom", "xn--gthub-cta.com", "github.com\u200b", "git%68ub.com",
        "evil.com", "127.0.0.1", "localhost", "[::1]", "169.254.169.254",
    ]
)  # fmt: skip
USERINFO = st.sampled_from(["", "user@", "github.com@", "x:y@", "github.com:443@", "evil.com\\@", "%40@", "a@b@"])
PORTS = st.sampled_from(["", ":443", ":8443", ":0", ":99999", ":@"])
PATHS = st.sampled_from(["/owner/repo.git", "/owner/repo", "/", "/owner/../repo", "/%2e%2e/repo", "//owner/repo"])
SUFFIXES = st.sampled_from(["", "?x=1", "#frag", "#@evil.com", "\\@evil.com", "/@evil.com"])


@settings(max_examples=500, deadline=None)
@given(
    scheme=st.sampled_from(["https", "HTTPS", "http", "git", "ssh", "file", "javascript"]),
    userinfo=USERINFO,
    host=HOST_SPELLINGS,
    port=PORTS,
    path=PATHS,
    suffix=SUFFIXES,
)
@example(scheme="https", userinfo="", host="evil.com", port="", path="\\@github.com/owner/repo", suffix="")
@example(scheme="https", userinfo="github.com@", host="evil.com", port="", path="/owner/repo", suffix="")
def test_an_accepted_url_reaches_an_allowed_host_and_nothing_else(
    scheme: str, userinfo: str, host: str, port: str, path: str, suffix: str
) -> None:
    url = f"{scheme}://{userinfo}{host}{port}{path}{suffix}"
    dns = RecordingDns()
    config = ServiceConfig.model_validate({"allow_local_repositories": False})
    try:
        location = RepositoryResolver(config, resolve_addresses=dns).locate(url, None)
    except (RepositoryNotAllowed, RepositoryNotAccessible):
        return
    parsed = urlsplit(location.clone_url)
    assert parsed.scheme == "https"
    assert parsed.username is None and parsed.password is None
    assert (parsed.hostname or "") in config.allowed_git_hosts
    assert not parsed.query and not parsed.fragment
    assert ".." not in parsed.path.split("/")
    # What the git client (dulwich over urllib3) would connect to is the host that was checked.
    assert urllib3.util.parse_url(location.clone_url).host == parsed.hostname
    assert dns.asked == [parsed.hostname]
    assert unicodedata.is_normalized("NFKC", parsed.hostname or "")


def test_the_local_stack_loopback_exception_does_not_open_numeric_loopback_spellings_elsewhere() -> None:
    allowed = resolver(RecordingDns(["10.0.0.1"]), allow_local_repositories=True)
    for host in ("0x7f.1", "2130706433", "localhost"):
        with pytest.raises(RepositoryNotAllowed):
            allowed.locate(f"http://{host}/owner/repo.git", None)
