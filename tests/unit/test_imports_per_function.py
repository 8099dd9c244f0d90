"""Each function imports only its own handler's dependencies (services.py builds lazily): the
cold start is mostly imports, so a workflow step that loaded the API's models, dulwich or the
event handler would pay for code it never runs (docs/performance.md, cold start).

Every function's module is imported the way Lambda's INIT imports it, in a fresh interpreter
(tracing on, as in Lambda), and what it loaded is compared with what it may load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

from conversation_service.logic.first_message import _TASK_PROMPTS
from conversation_service.models import environment
from conversation_service.models.api import SuggestedTaskType
from pydantic import TypeAdapter, ValidationError

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
LAYER = ROOT / "layers" / "common"

# What is too heavy to load where it is not used, by the module that loads it.
DULWICH = "dulwich"  # the git protocol: loaded when a create verifies a repository, never at import
EVENT_HANDLER = "aws_lambda_powertools.event_handler"  # routing and validation of HTTP requests
IDEMPOTENCY = "aws_lambda_powertools.utilities.idempotency"  # loaded by the first keyed message
BATCH = "aws_lambda_powertools.utilities.batch"  # partial batch responses (stream, SQS)
API_MODELS = "conversation_service.models.api"  # the public API's request and response models
REQUESTS = "requests"  # nothing uses it; X-Ray's patch_all would import it (observability.py)
WATCHED = (DULWICH, EVENT_HANDLER, IDEMPOTENCY, BATCH, API_MODELS, REQUESTS)

# Per function (its folder), the watched modules its handler may import; a new function must be
# added here.
ALLOWED: dict[str, set[str]] = {
    "api": {EVENT_HANDLER, API_MODELS},
    "sandbox_api": {EVENT_HANDLER, API_MODELS},  # the channel's models extend the API's base model
    "sandbox_pool": {EVENT_HANDLER},
    "event_intake": {BATCH, API_MODELS},  # a CreateConversation event carries the API's request
    "conversation_stream": {BATCH, API_MODELS},  # publishes events whose models share the API's
    "authorizer": set(),
    "initialize_context": set(),
    "launch_sandbox": set(),
    "mark_running": set(),
    "record_failure": set(),
    "pool_reconciler": set(),
    "sandbox_watch": set(),
    "stale_start_sweeper": set(),
}

# One fresh interpreter loads what every function loads (the layer's configuration, models of the
# environment, observability: Powertools and boto3), then forks one child per function, which
# imports that function's module as Lambda's INIT does, builds the services its handler uses (the
# first call's composition, from services.py: no AWS call) and reports the watched modules it
# holds. Forking keeps the test to a few seconds; the parent checks it loaded none of them itself.
_REPORT = """
import importlib.util, json, os, sys
functions, watched = sys.argv[1], json.loads(sys.argv[2])
import conversation_service.config, conversation_service.observability, conversation_service.services

def holds():
    return sorted(w for w in watched if any(m == w or m.startswith(w + ".") for m in sys.modules))

report = {"(shared)": holds()}
pipes = {}
for name in json.loads(sys.argv[3]):
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        os.environ.update(AWS_LAMBDA_FUNCTION_NAME=name, LAMBDA_TASK_ROOT=os.path.join(functions, name))
        sys.path.insert(0, os.path.join(functions, name))
        try:
            spec = importlib.util.spec_from_file_location("app", os.path.join(functions, name, "app.py"))
            module = importlib.util.module_from_spec(spec)
            sys.modules["app"] = module
            spec.loader.exec_module(module)
            for factory in list(vars(module).values()):  # what the first call builds, built now
                if callable(factory) and getattr(factory, "__module__", "") == "conversation_service.services":
                    factory()
            answer = holds()
        except BaseException as error:
            answer = {"error": repr(error)}
        os.write(write, json.dumps(answer).encode())
        os._exit(0)
    os.close(write)
    pipes[name] = read
for name, read in pipes.items():  # the children run side by side (small answers: no pipe fills)
    with os.fdopen(read) as pipe:
        report[name] = json.loads(pipe.read())
    os.wait()
print(json.dumps(report))
"""


def _placeholder_environment() -> dict[str, str]:
    """A valid value for every variable any function requires (no AWS is called at import)."""
    candidates = ("arn:aws:states:us-east-1:123456789012:stateMachine:x", "https://sandbox.example/x", "x")
    values: dict[str, str] = {}
    for model in vars(environment).values():
        if not (isinstance(model, type) and issubclass(model, environment.FunctionEnvironment)):
            continue
        for name, field in model.model_fields.items():
            adapter: TypeAdapter[Any] = TypeAdapter(Annotated[field.annotation, *field.metadata])
            for candidate in candidates:
                try:
                    adapter.validate_python(candidate)
                except ValidationError:
                    continue
                values[name] = candidate
                break
    return values


def test_each_function_imports_only_what_its_handler_uses() -> None:
    on_disk = sorted(path.parent.name for path in FUNCTIONS.glob("*/app.py"))
    assert sorted(ALLOWED) == on_disk, "every function is listed in ALLOWED with what it may import"
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **_placeholder_environment(),
        "AWS_DEFAULT_REGION": "us-east-1",
        # As inside Lambda: Powertools' Tracer is on and patches what it traces.
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "POWERTOOLS_TRACE_DISABLED": "false",
    }
    completed = subprocess.run(
        [sys.executable, "-c", _REPORT, str(FUNCTIONS), json.dumps(WATCHED), json.dumps(on_disk)],
        env={**base, "PYTHONPATH": str(LAYER), "AWS_LAMBDA_FUNCTION_NAME": "shared", "LAMBDA_TASK_ROOT": str(ROOT)},
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report.pop("(shared)") == [], "what every function loads (config, observability, services) holds none"
    failed = {name: answer["error"] for name, answer in report.items() if isinstance(answer, dict)}
    assert failed == {}, f"functions failed to import: {failed}"
    loaded = {name: set(answer) for name, answer in report.items()}
    too_much = {name: sorted(modules - ALLOWED[name]) for name, modules in loaded.items() if modules - ALLOWED[name]}
    assert too_much == {}, f"functions import what their handler does not use: {too_much}"
    # The table is no wider than it needs to be: what a function may import, it does import.
    unused = {name: sorted(ALLOWED[name] - modules) for name, modules in loaded.items() if ALLOWED[name] - modules}
    assert unused == {}, f"ALLOWED grants imports these functions no longer make (narrow it): {unused}"


def test_the_first_message_knows_every_suggested_task_without_importing_the_api_models() -> None:
    # first_message.py keys its prompts by SuggestedTaskType's values so the workflow step does
    # not import models.api: a new task type must still get its prompt.
    assert set(_TASK_PROMPTS) == {task.value for task in SuggestedTaskType}
    assert all(_TASK_PROMPTS[task] for task in SuggestedTaskType)  # a StrEnum member finds its value's key


def test_every_model_of_the_service_builds_its_schema_on_first_use() -> None:
    # A function imports many more models than it uses: models/base.py's ServiceModel defers
    # building each one's validator (defer_build) to its first use.
    import importlib
    import pkgutil

    from conversation_service import models
    from pydantic import BaseModel

    found = []
    for info in pkgutil.iter_modules(models.__path__):
        module = importlib.import_module(f"{models.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__:
                found.append(value)
                # ServiceModel, or a Powertools parser model given the same config (models/aws_events.py)
                assert value.model_config.get("defer_build") is True, f"{value.__module__}.{value.__qualname__}"
    assert len(found) > 40
