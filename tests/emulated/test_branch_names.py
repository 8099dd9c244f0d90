"""Branch names follow git's own rules: the real `git check-ref-format --branch` is the oracle."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emulated.support import create, get_conversation
from tests.support.git_repositories import make_repository


@pytest.mark.parametrize("name", ["bad..name", "with space", "-flag", "x.lock", "HEAD", "a@{1}"])
def test_api_refuses_an_invalid_branch_before_reaching_the_repository(user, repository, name: str) -> None:
    path, _ = repository
    response = create({"repository": str(path), "selected_branch": name})
    assert response.status == 400, response.body
    assert response.body["msg_id"] == "STATUS$GIT_INVALID_BRANCH_NAME"
    assert response.body["status"] == "error"


def test_a_branch_git_accepts_but_that_looks_odd_is_found(user, tmp_path: Path) -> None:
    commits = make_repository(tmp_path / "odd", ("main", "@", "release{1}"))
    for branch in ("@", "release{1}"):
        response = create({"repository": str(tmp_path / "odd"), "selected_branch": branch})
        assert response.status == 200, response.body
        view = get_conversation(response.body["conversation_id"]).body
        assert (view["selected_branch"], view["commit"]) == (branch, commits[branch])
