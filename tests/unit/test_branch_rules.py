"""Branch names follow git's own rules: the real `git check-ref-format --branch` is the oracle
(the API refusing them: tests/emulated/test_branch_names.py)."""

from __future__ import annotations

import string
from collections.abc import Callable

import pytest
from conversation_service.logic.validation import branch_name_problem
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.support.git_repositories import git_branch_oracle

BRANCH_ALPHABET = (
    string.ascii_letters
    + "/.-@{~^: \\*?["
    # Control characters; NUL cannot travel in argv, so it is checked on its own below.
    + "".join(chr(code) for code in range(1, 32))
    + "\x7f"
)


@pytest.fixture(scope="module")
def git_oracle(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], bool]:
    """`git check-ref-format --branch` run inside an empty repository, with no user config."""
    return git_branch_oracle(tmp_path_factory.mktemp("oracle"))


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
