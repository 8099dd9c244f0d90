"""Runs our real Lambda handlers in this process, wherever AWS would invoke them.

moto's Step Functions engine invokes Lambda through the Lambda API; with
`{"lambda": {"use_docker": False}}` moto answers from `LambdaSimpleBackend.invoke`, a
canned payload. `install_into_moto` replaces that method so each invocation runs the real
handler named in template.yaml and answers as Lambda does: the handler's result, or an
`Unhandled` function error carrying the exception's type (which the ASL Catch/Retry match).
That is a moto internal: moto is pinned, and tests/integration/test_lambda_runtime.py fails
loudly if it moves.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from devstack.template_resources import ROOT, FunctionSpec, StackResources

LAYER_PATH = ROOT / "layers" / "common"
_log = logging.getLogger("devstack.lambda")


@dataclass
class LocalLambdaContext:
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    function_version: str = "$LATEST"
    timeout_seconds: int = 30

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_seconds * 1000


class FunctionError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def union_environment(resources: StackResources) -> dict[str, str]:
    """Every function's variables together: one process runs them all locally.

    Safe because no two functions give one variable different values
    (tests/integration/test_lambda_runtime.py checks it).
    """
    merged: dict[str, str] = {}
    for spec in resources.functions.values():
        merged.update(spec.environment)
    return merged


ENVIRONMENTS_PER_FUNCTION = 8
"""Execution environments a function may have at once (Lambda scales out; here a fixed pool): a
long poll (the inbox, `events?wait=`, an idle pool sandbox's assignment) holds one, and the other
calls of that function go on. A function with ReservedConcurrentExecutions has at most that many."""


class _PerThread:
    """A data descriptor whose value is the current thread's own."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, owner_instance: Any, owner: Any = None) -> Any:
        return getattr(_INVOCATION_STATE, self._name, None)

    def __set__(self, owner_instance: Any, value: Any) -> None:
        setattr(_INVOCATION_STATE, self._name, value)


_INVOCATION_STATE = threading.local()
_ROUTER_STATE = ("current_event", "lambda_context")


def keep_powertools_router_state_per_thread() -> None:
    """Powertools' event handler keeps the request being resolved on its ``BaseRouter`` class
    (``BaseRouter.current_event = ...`` in ``resolve``), one per process, which is one invocation
    at a time in Lambda. Here the invocations of every function run in threads of one process, so
    two requests at once (two sandboxes fetching their contexts) could each read the other's
    headers. Both attributes become per thread: on the class (a metaclass descriptor takes the
    class-level assignment) and on every resolver instance."""
    from abc import ABCMeta

    from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

    if isinstance(BaseRouter.__dict__.get(_ROUTER_STATE[0]), _PerThread):
        return
    metaclass = type(BaseRouter)
    assert issubclass(metaclass, ABCMeta), metaclass
    per_thread_metaclass = type(
        "PerThreadRouterState", (metaclass,), {name: _PerThread(name) for name in _ROUTER_STATE}
    )
    for name in _ROUTER_STATE:
        setattr(BaseRouter, name, _PerThread(name))
    BaseRouter.__class__ = per_thread_metaclass  # type: ignore[method-assign]


class _ExecutionEnvironment:
    """One copy of a function's module, used by one invocation at a time: the Powertools resolvers
    keep the current event on a module-level object, as a Lambda execution environment would."""

    def __init__(self, module: ModuleType | None) -> None:
        self.module = module
        self.holder: int | None = None  # the thread running an invocation in it
        self.depth = 0


class LocalLambdaRuntime:
    def __init__(self, resources: StackResources, on_invoke: Callable[[str, Any], None] | None = None) -> None:
        self._resources = resources
        self._by_name: dict[str, FunctionSpec] = {}
        for spec in resources.functions.values():
            self._by_name[spec.name] = spec
            self._by_name[spec.arn] = spec
            self._by_name[spec.logical_id] = spec
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        # Per function, up to ENVIRONMENTS_PER_FUNCTION environments, each running one invocation at
        # a time. Reentrant: a handler that (through moto) ends up invoking its own function on the
        # same thread runs in the environment it holds.
        self._environments: dict[str, list[_ExecutionEnvironment]] = {}
        self._on_invoke = on_invoke
        if str(LAYER_PATH) not in sys.path:
            sys.path.insert(0, str(LAYER_PATH))
        keep_powertools_router_state_per_thread()

    def spec(self, name_or_arn: str) -> FunctionSpec:
        name = name_or_arn.split(":function:", 1)[-1].split(":", 1)[0] if ":function:" in name_or_arn else name_or_arn
        return self._by_name.get(name_or_arn) or self._by_name[name]

    def _load(self, spec: FunctionSpec, number: int) -> ModuleType:
        module_name = spec.handler.rsplit(".", 1)[0]
        path = Path(spec.code_dir) / f"{module_name.replace('.', '/')}.py"
        suffix = f"_{number}" if number else ""
        import_spec = importlib.util.spec_from_file_location(f"lambda_{spec.logical_id}{suffix}", path)
        assert import_spec and import_spec.loader
        module = importlib.util.module_from_spec(import_spec)
        sys.modules[import_spec.name] = module
        import_spec.loader.exec_module(module)
        return module

    def handler(self, name_or_arn: str) -> Callable[[Any, Any], Any]:
        """The handler of the function's first environment (loaded on first use)."""
        spec = self.spec(name_or_arn)
        with self._lock:
            environments = self._environments.setdefault(spec.logical_id, [])
            if not environments:
                environments.append(_ExecutionEnvironment(self._load(spec, 0)))
            module = environments[0].module
        assert module is not None
        handler: Callable[[Any, Any], Any] = getattr(module, spec.handler.rsplit(".", 1)[1])
        return handler

    def _acquire(self, spec: FunctionSpec) -> _ExecutionEnvironment:
        me = threading.get_ident()
        with self._lock:
            environments = self._environments.setdefault(spec.logical_id, [])
            while True:
                for environment in environments:
                    if environment.holder in (None, me):
                        environment.holder = me
                        environment.depth += 1
                        return environment
                if len(environments) < min(
                    ENVIRONMENTS_PER_FUNCTION, spec.reserved_concurrency or ENVIRONMENTS_PER_FUNCTION
                ):
                    # A new one: held (so nobody else takes it) while its module loads outside the lock.
                    environment = _ExecutionEnvironment(None)
                    environment.holder, environment.depth = me, 1
                    environments.append(environment)
                    number = len(environments) - 1
                    break
                self._freed.wait()
        try:
            environment.module = self._load(spec, number)
        except BaseException:
            with self._lock:
                environments.remove(environment)
                self._freed.notify()
            raise
        return environment

    def _release(self, environment: _ExecutionEnvironment) -> None:
        with self._lock:
            environment.depth -= 1
            if environment.depth == 0:
                environment.holder = None
                self._freed.notify()

    def invoke(self, name_or_arn: str, event: Any) -> Any:
        """Run the function; raise FunctionError as Lambda would report an unhandled error."""
        spec = self.spec(name_or_arn)
        if self._on_invoke:
            self._on_invoke(spec.logical_id, event)
        context = LocalLambdaContext(spec.name, spec.arn, timeout_seconds=spec.timeout)
        self.handler(spec.logical_id)  # the first environment, loaded once (errors of the import raise here)
        environment = self._acquire(spec)
        try:
            handler = getattr(environment.module, spec.handler.rsplit(".", 1)[1])
            return handler(event, context)
        except Exception as error:
            _log.warning("%s raised %s", spec.logical_id, type(error).__name__, exc_info=True)
            raise FunctionError(type(error).__name__, str(error)) from error
        finally:
            self._release(environment)

    def invoke_async(self, name_or_arn: str, event: Any) -> None:
        """An `Event` invocation: Lambda queues it and answers 202 at once; errors are only logged."""

        def run() -> None:
            with contextlib.suppress(FunctionError):  # logged by invoke, as Lambda logs it
                self.invoke(name_or_arn, event)

        threading.Thread(target=run, name=f"async-{self.spec(name_or_arn).logical_id}", daemon=True).start()

    def install_into_moto(self) -> None:
        from moto.awslambda_simple.models import LambdaSimpleBackend

        runtime = self

        def invoke(
            backend: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
        ) -> bytes:
            event = json.loads(body) if body else {}
            if (headers or {}).get("X-Amz-Invocation-Type") == "Event":
                runtime.invoke_async(function_name, event)
                return b""
            try:
                result = runtime.invoke(function_name, event)
            except FunctionError as error:
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps({"errorType": error.error_type, "errorMessage": str(error)}).encode()
            return json.dumps(result).encode()

        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign,assignment]


def apply_environment(resources: StackResources, overrides: dict[str, str] | None = None) -> dict[str, str]:
    environment = {**union_environment(resources), **(overrides or {})}
    os.environ.update(environment)
    return environment
