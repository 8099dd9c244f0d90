"""Each function's required environment (models/environment.py), checked while Lambda imports it:
the template gives every function what its model requires, and without any one of those
variables the import (the cold start) fails naming it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from conversation_service.models.environment import FunctionEnvironment
from conversation_service.models.errors import InvalidEnvironment

from devstack.lambda_runtime import union_environment
from devstack.template_resources import StackResources

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


def _import_fresh(code_dir: Path, tag: str) -> ModuleType:
    """The function's module as a new Lambda execution environment imports it."""
    spec = importlib.util.spec_from_file_location(f"environment_check_{code_dir.name}_{tag}", code_dir / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _only_environment_of(stack: StackResources, logical_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in union_environment(stack):
        monkeypatch.delenv(name, raising=False)
    for name, value in stack.functions[logical_id].environment.items():
        monkeypatch.setenv(name, value)


def test_every_function_declares_its_environment(stack: StackResources) -> None:
    on_disk = {path.parent.name for path in FUNCTIONS.glob("*/app.py")}
    in_template = {spec.code_dir.name for spec in stack.functions.values()}
    assert on_disk == in_template
    for path in FUNCTIONS.glob("*/app.py"):
        assert "ENVIRONMENT = require_environment(" in path.read_text(), f"{path} checks no environment at import"


def test_each_function_starts_with_its_template_environment_and_not_without_any_required_variable(
    stack: StackResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = 0
    for logical_id, spec in sorted(stack.functions.items()):
        with monkeypatch.context() as scoped:
            _only_environment_of(stack, logical_id, scoped)
            module = _import_fresh(spec.code_dir, "complete")  # raises if the template gives too little
            model = type(module.ENVIRONMENT)
            assert issubclass(model, FunctionEnvironment)
            assert model.model_fields, logical_id
            for variable in model.model_fields:
                with monkeypatch.context() as without:
                    without.delenv(variable)
                    with pytest.raises(InvalidEnvironment, match=variable):
                        _import_fresh(spec.code_dir, f"without_{variable}")
                    checked += 1
    assert checked >= 30


def test_the_functions_that_stop_sandboxes_know_the_cluster(stack: StackResources) -> None:
    # MarkRunning and RecordFailure stop the task of a closed conversation: without the cluster
    # StopTask would look on the account's default cluster.
    for logical_id in ("MarkRunningFunction", "RecordFailureFunction", "ConversationStreamFunction"):
        assert stack.functions[logical_id].environment["SANDBOX_CLUSTER_ARN"].startswith("arn:"), logical_id
