"""The ASL file and the template agree, and the state machine obeys the house rules:
every Task has a Catch and a timeout, and statelint finds nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.template_resources import ROOT, load_template

ASL_PATH = ROOT / "statemachine" / "create_conversation.asl.json"


def _state_machine() -> dict[str, Any]:
    resources = load_template()["Resources"]
    return dict(resources["ConversationWorkflow"]["Properties"])


def _substituted() -> dict[str, Any]:
    text = ASL_PATH.read_text()
    parameters = load_template()["Parameters"]
    substitutions = _state_machine()["DefinitionSubstitutions"]
    sample = {
        key: str(parameters[value["Ref"]]["Default"])
        if isinstance(value, dict) and "Ref" in value
        else f"arn:aws:lambda:us-east-1:123456789012:function:{key}"
        for key, value in substitutions.items()
    }
    return dict(json.loads(re.sub(r"\$\{(\w+)\}", lambda match: sample[match.group(1)], text)))


def test_the_file_is_json_before_substitution() -> None:
    """Editors, linters and diff tools read the file as it is: every placeholder sits in a string
    (numbers are quoted there and converted by the SandboxTimeouts state where a *Path field takes
    them; Retry's IntervalSeconds has no *Path form, so the throttled launch's backoff is a literal)."""
    text = ASL_PATH.read_text()

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    in_strings = [name for value in strings(json.loads(text)) for name in re.findall(r"\$\{(\w+)\}", value)]
    assert sorted(in_strings) == sorted(re.findall(r"\$\{(\w+)\}", text))
    assert set(in_strings) == set(_state_machine()["DefinitionSubstitutions"])


def _seconds(definition: dict[str, Any], state: dict[str, Any], field: str) -> int:
    """`<field>Seconds` of a state, or the number its `<field>SecondsPath` points at: a field of the
    SandboxTimeouts Pass state, converted there from its quoted substitution."""
    if f"{field}Seconds" in state:
        return int(state[f"{field}Seconds"])
    path = state[f"{field}SecondsPath"]
    timeouts = definition["States"]["SandboxTimeouts"]
    prefix = f"{timeouts['ResultPath']}."
    assert path.startswith(prefix), path
    intrinsic = timeouts["Parameters"][f"{path.removeprefix(prefix)}.$"]
    match = re.fullmatch(r"States\.StringToJson\('(\d+)'\)", intrinsic)
    assert match, intrinsic
    return int(match.group(1))


def test_the_sandbox_timeouts_are_set_before_the_state_that_reads_them() -> None:
    definition = _substituted()
    assert definition["StartAt"] == "SandboxTimeouts"
    assert definition["States"]["SandboxTimeouts"]["Type"] == "Pass"
    parameters = load_template()["Parameters"]
    launch = definition["States"]["LaunchSandbox"]
    assert _seconds(definition, launch, "Timeout") == parameters["SandboxStartTimeoutSeconds"]["Default"]
    assert _seconds(definition, launch, "Heartbeat") == parameters["SandboxHeartbeatSeconds"]["Default"]


def test_definition_uri_points_at_the_asl_file() -> None:
    assert (ROOT / _state_machine()["DefinitionUri"]).resolve() == ASL_PATH.resolve()


def test_every_placeholder_has_a_substitution_and_back() -> None:
    placeholders = set(re.findall(r"\$\{(\w+)\}", ASL_PATH.read_text()))
    assert placeholders == set(_state_machine()["DefinitionSubstitutions"])


def test_every_task_has_a_catch_and_a_timeout() -> None:
    definition = _substituted()
    states = definition["States"]
    tasks = {name: state for name, state in states.items() if state["Type"] == "Task"}
    assert tasks
    for name, state in tasks.items():
        assert state.get("Catch"), f"{name} has no Catch"
        assert any("States.ALL" in rule["ErrorEquals"] for rule in state["Catch"]), name
        assert _seconds(definition, state, "Timeout") > 0, f"{name} has no timeout"


def test_the_workflow_has_an_overall_timeout_and_waits_with_a_heartbeat() -> None:
    definition = _substituted()
    assert definition["TimeoutSeconds"] > 0
    launch = definition["States"]["LaunchSandbox"]
    assert launch["Resource"].endswith("waitForTaskToken")
    assert 0 < _seconds(definition, launch, "Heartbeat") < _seconds(definition, launch, "Timeout")


def test_every_path_ends_running_or_in_record_failure() -> None:
    states = _substituted()["States"]
    for name, state in states.items():
        for rule in state.get("Catch", []):
            assert rule["Next"] in {"RecordFailure", "WorkflowFailed"}, name
    assert states["MarkRunning"].get("End") is True
    assert states["RecordFailure"]["Next"] == "ConversationEndedInError"
    assert states["ConversationEndedInError"]["Type"] == "Succeed"
    # Only a failure to record the failure fails the execution (and fires the alarm).
    assert [name for name, state in states.items() if state["Type"] == "Fail"] == ["WorkflowFailed"]


def test_statelint_is_clean(tmp_path: Path) -> None:
    statelint = Path(sys.executable).parent / "statelint"
    if not statelint.exists():
        statelint = Path(shutil.which("statelint") or "")
    if not statelint.is_file():
        pytest.fail("statelint is not installed: it is in requirements/dev.txt")
    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps(_substituted()))
    result = subprocess.run([str(statelint), str(definition)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_state_machine_retries_exactly_the_errors_the_steps_raise() -> None:
    """Names in Retry clauses other than Step Functions' and Lambda's own are the workflow errors
    that models/errors.py declares retryable, and a step that raises them lists them."""
    from conversation_service.models.errors import WORKFLOW_STEP_ERRORS, RetryableError, SandboxLaunchThrottled

    states = _substituted()["States"]
    retryable = {name for name, error in WORKFLOW_STEP_ERRORS.items() if error.retryable}
    assert retryable, "no retryable workflow error"
    named: dict[str, set[str]] = {}
    for state_name, state in states.items():
        for rule in state.get("Retry", []):
            for error in rule["ErrorEquals"]:
                if not error.startswith(("States.", "Lambda.")):
                    named.setdefault(state_name, set()).add(error)
    assert set().union(*named.values()) == retryable, named
    # The steps whose handlers translate transient AWS failures (logic/workflow.py) retry them;
    # LaunchSandbox retries only a throttled or capacity-starved RunTask (dal/sandboxes.py).
    assert named == {
        "InitializeContext": {RetryableError.__name__},
        "LaunchSandbox": {SandboxLaunchThrottled.__name__},
        "MarkRunning": {RetryableError.__name__},
    }


def test_each_step_is_handed_exactly_what_its_input_model_reads() -> None:
    """The Payload of each Lambda Task names the fields of its step's input model
    (models/workflow_steps.py, extra fields forbidden): a rename on either side fails here."""
    from conversation_service.models.workflow_steps import (
        InitializeContextInput,
        LaunchSandboxInput,
        MarkRunningInput,
        RecordFailureInput,
    )

    models = {
        "InitializeContext": InitializeContextInput,
        "LaunchSandbox": LaunchSandboxInput,
        "MarkRunning": MarkRunningInput,
        "RecordFailure": RecordFailureInput,
    }
    states = _substituted()["States"]
    payloads = {
        name: {key.removesuffix(".$") for key in state["Parameters"]["Payload"]}
        for name, state in states.items()
        if state["Type"] == "Task"
    }
    assert set(payloads) == set(models)
    for name, model in models.items():
        assert payloads[name] == set(model.model_fields), name
