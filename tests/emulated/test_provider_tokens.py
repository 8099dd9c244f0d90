"""A provider token goes only to its own host (issue 10): the provider is the repository host's,
a contradicting `git_provider` is refused, enterprise tokens are kept per host, and only the
default port may receive a token."""

from __future__ import annotations

from tests.emulated.support import create, save_settings
from tests.unit.test_provider_hosts import ENTERPRISE_HOSTS


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
