"""Branch names follow git's own rules: the real `git check-ref-format --branch` is the oracle."""

from __future__ import annotations

import os
import string
import subprocess
from pathlib import Path

import pytest
from conversation_service.logic.validation import branch_name_problem
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.emulated.support import create, get_conversation
from tests.helpers import make_repository

BRANCH_ALPHABET = (
    string.ascii_letters
    + "/.-@{~^: \\*?["
    # Control characters; NUL cannot travel in argv, so it is checked on its own below.
    + "".join(chr(code) for code in range(1, 32))
    + "\x7f"
)


@pytest.fixture(scope="module")
def git_oracle(tmp_path_factory: pytest.TempPathFactory):
    """`git check-ref-format --branch` run inside an empty repository, with no user config."""
    repository = tmp_path_factory.mktemp("oracle")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repository), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(repository)], check=True, env=env)

    def git_accepts(name: str) -> bool:
        result = subprocess.run(
            ["git", "check-ref-format", "--branch", name], cwd=repository, env=env, capture_output=True
        )
        return result.returncode == 0

    return git_accepts


@settings(max_examples=300, deadline=None)
@given(name=st.text(alphabet=BRANCH_ALPHABET, max_size=40))
@example(name="HEAD")  # git refuses the branch HEAD
@example(name="@")  # ...but takes "@" as a branch name
@example(name="a@{b")
@example(name="-x")
@example(name="x.lock")
@example(name="x.lock/y")
@example(name=".x")
@example(name="a/.b")
@example(name="x.")
@example(name="x/")
@example(name="/x")
@example(name="a..b")
@example(name="a//b")
@example(name="feature/login")
@example(name="{")
@example(name="a@b")
@example(name="HEAD/x")
def test_branch_rules_agree_with_git(git_oracle, name: str) -> None:
    ours = branch_name_problem(name) is None
    assert ours == git_oracle(name), f"{name!r}: ours {'accepts' if ours else 'refuses'} ({branch_name_problem(name)})"


def test_nul_and_overlong_names_are_refused() -> None:
    assert branch_name_problem("main\x00evil") is not None
    assert branch_name_problem("b" * 256) is not None
    assert branch_name_problem("b" * 255) is None


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
