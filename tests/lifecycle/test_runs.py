"""Run numbers and execution names: run 1 keeps the conversation id as its execution's name."""

from __future__ import annotations

import pytest
from conversation_service.logic.runs import execution_name, run_of_execution

ID = "4f0c6d0a2b7e4c1f9d3a8b5e6c7d8e9f"


def test_the_first_run_is_named_by_the_conversation_id() -> None:
    assert execution_name(ID, 1) == ID
    assert execution_name(ID, 2) == f"{ID}-2"
    assert execution_name(ID, 17) == f"{ID}-17"


@pytest.mark.parametrize(
    ("name", "run"),
    [
        (ID, 1),
        (f"{ID}-2", 2),
        (f"{ID}-10", 10),
        (None, None),
        ("", None),
        (f"{ID}-1", None),
        (f"{ID}-x", None),
        (f"{ID[:-1]}0", None),
        (f"{ID}-2-3", None),
    ],
)
def test_the_run_of_an_execution(name: str | None, run: int | None) -> None:
    assert run_of_execution(ID, name) == run


def test_names_and_runs_round_trip() -> None:
    for run in range(1, 50):
        assert run_of_execution(ID, execution_name(ID, run)) == run
