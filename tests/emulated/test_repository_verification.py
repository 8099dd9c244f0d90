"""Reachability and branches are checked with dulwich against real repositories: local paths and
a real smart-HTTP git server (dulwich.web) on loopback. The recorded commit is the branch's."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest

from tests.emulated.support import (
    GITHUB_TOKEN,
    conversation_item,
    create,
    get_conversation,
    save_settings,
    silent_server,
    smart_http_git_server,
)
from tests.support.git_repositories import make_repository


def created_view(response) -> dict[str, Any]:
    assert response.status == 200, response.body
    view = get_conversation(response.body["conversation_id"])
    assert view.status == 200, view.body
    return view.body


# -- local repositories ----------------------------------------------------------------------
def test_local_branch_is_checked_and_its_commit_recorded(user, repository, tables) -> None:
    path, commits = repository
    response = create({"repository": str(path), "selected_branch": "feature/login"})
    view = created_view(response)
    assert (view["selected_branch"], view["commit"]) == ("feature/login", commits["feature/login"])
    item = conversation_item(tables["conversations"], response.body["conversation_id"])
    assert item["commit"] == {"S": commits["feature/login"]}
    assert item["branch_requested"] == {"BOOL": True}


def test_without_a_branch_the_default_branch_and_its_commit_are_recorded(user, tmp_path: Path, tables) -> None:
    commits = make_repository(tmp_path / "trunk-repo", ("trunk", "develop"))
    response = create({"repository": str(tmp_path / "trunk-repo")})
    view = created_view(response)
    assert (view["selected_branch"], view["commit"]) == ("trunk", commits["trunk"])
    assert conversation_item(tables["conversations"], response.body["conversation_id"])["branch_requested"] == {
        "BOOL": False
    }


def test_a_missing_branch_is_refused(user, repository) -> None:
    path, _ = repository
    response = create({"repository": str(path), "selected_branch": "no-such-branch"})
    assert response.status == 400
    assert response.body["msg_id"] == "STATUS$GIT_BRANCH_NOT_FOUND"
    assert "no-such-branch" in response.body["message"]


def test_a_missing_local_repository_is_refused(user, tmp_path: Path) -> None:
    response = create({"repository": str(tmp_path / "nowhere")})
    assert response.status == 400
    assert response.body["msg_id"] == "STATUS$GIT_PROVIDER_AUTHENTICATION_ERROR"


def test_a_directory_that_is_not_a_repository_is_refused(user, tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    response = create({"repository": str(tmp_path / "plain")})
    assert response.status == 400
    assert response.body["msg_id"] == "STATUS$GIT_PROVIDER_AUTHENTICATION_ERROR"


def test_an_empty_repository_has_no_default_branch(user, tmp_path: Path) -> None:
    from tests.support.git_repositories import git

    (tmp_path / "empty").mkdir()
    git(tmp_path / "empty", "init", "-q")
    response = create({"repository": str(tmp_path / "empty")})
    assert response.status == 400
    assert response.body["msg_id"] == "STATUS$GIT_BRANCH_NOT_FOUND"


# -- smart HTTP ------------------------------------------------------------------------------
@pytest.fixture
def served(repository: tuple[Path, dict[str, str]]):
    path, commits = repository
    with smart_http_git_server({"/acme/widgets.git": path}) as base_url:
        yield f"{base_url}/acme/widgets.git", commits, base_url


def test_http_branch_is_checked_and_its_commit_recorded(user, served) -> None:
    url, commits, _ = served
    view = created_view(create({"repository": url, "selected_branch": "feature/login"}))
    assert (view["repository"], view["selected_branch"], view["commit"]) == (
        url,
        "feature/login",
        commits["feature/login"],
    )


def test_http_without_a_branch_records_the_default_branch(user, served) -> None:
    url, commits, _ = served
    view = created_view(create({"repository": url}))
    assert (view["selected_branch"], view["commit"]) == ("main", commits["main"])


def test_http_missing_branch(user, served) -> None:
    url, _, _ = served
    response = create({"repository": url, "selected_branch": "release/9.9"})
    assert (response.status, response.body["msg_id"]) == (400, "STATUS$GIT_BRANCH_NOT_FOUND")


def test_http_missing_repository(user, served) -> None:
    _, _, base_url = served
    response = create({"repository": f"{base_url}/acme/does-not-exist.git"})
    assert (response.status, response.body["msg_id"]) == (400, "STATUS$GIT_PROVIDER_AUTHENTICATION_ERROR")


def test_a_server_that_never_answers_is_given_up_within_the_timeout(user, service_env) -> None:
    service_env(GIT_TIMEOUT_SECONDS="1")
    with silent_server() as base_url:
        started = time.monotonic()
        response = create({"repository": f"{base_url}/acme/widgets.git", "selected_branch": "main"})
        elapsed = time.monotonic() - started
    assert (response.status, response.body["msg_id"]) == (400, "STATUS$GIT_PROVIDER_AUTHENTICATION_ERROR")
    assert elapsed < 1 + 2, f"took {elapsed:.1f} s with GIT_TIMEOUT_SECONDS=1"


def test_nothing_listening_is_refused(user) -> None:
    with silent_server() as base_url:
        pass  # closed: the port now refuses connections
    response = create({"repository": f"{base_url}/acme/widgets.git"})
    assert (response.status, response.body["msg_id"]) == (400, "STATUS$GIT_PROVIDER_AUTHENTICATION_ERROR")


# -- a private repository: the provider token from the settings is what opens it -----------------
class RequireBasicAuth:
    """WSGI middleware: 401 unless the request carries `user:password`."""

    def __init__(self, app: Any, user: str, password: str) -> None:
        self.app = app
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.seen: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        given = environ.get("HTTP_AUTHORIZATION", "")
        self.seen.append(given)
        if given != self.expected:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Length", "0")])
            return [b""]
        return self.app(environ, start_response)


def test_private_repository_needs_the_users_provider_token(user, repository) -> None:
    path, commits = repository
    guard: dict[str, RequireBasicAuth] = {}

    def wrap(app: Any) -> Any:
        guard["auth"] = RequireBasicAuth(app, "oauth2", GITHUB_TOKEN)
        return guard["auth"]

    with smart_http_git_server({"/team/private.git": path}, middleware=wrap) as base_url:
        url = f"{base_url}/team/private.git"
        refused = create({"repository": url, "git_provider": "gitlab"})
        assert (refused.status, refused.body["msg_id"]) == (400, "STATUS$GIT_PROVIDER_AUTHENTICATION_ERROR")
        assert save_settings({"provider_tokens": {"gitlab": GITHUB_TOKEN}}).status == 200
        view = created_view(create({"repository": url, "git_provider": "gitlab", "selected_branch": "feature/login"}))
    assert view["commit"] == commits["feature/login"]
    assert guard["auth"].expected in guard["auth"].seen
