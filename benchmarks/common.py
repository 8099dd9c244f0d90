"""What every benchmark shares: a fake-credential environment, percentiles, AWS call counting."""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "common"
FUNCTIONS_DIR = ROOT / "functions"
REGION = "us-east-1"

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def use_fake_aws() -> None:
    """No real AWS account can be reached from this process: fake keys, no profile, no IMDS."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        os.environ.pop(name, None)
    os.environ.update(FAKE_AWS)
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    for path in (str(LAYER), str(FUNCTIONS_DIR), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


# -- counting AWS calls -------------------------------------------------------------------------
@dataclass
class AwsCall:
    service: str
    operation: str
    params: dict[str, Any]


@dataclass
class CallCounter:
    """Counts every API call made through the clients it is attached to (botocore event hooks).

    `before-parameter-build` fires once per API call with its parameters, before botocore's
    retries: a retried call counts once (throttled attempts are not billed either).
    """

    calls: list[AwsCall] = field(default_factory=list)
    _attached: set[int] = field(default_factory=set)

    def attach(self, *clients: Any) -> CallCounter:
        for client in clients:
            if id(client) in self._attached:
                continue  # a client attached twice counts once
            self._attached.add(id(client))
            client.meta.events.register("before-parameter-build", self._record)
        return self

    def detach(self, *clients: Any) -> None:
        for client in clients:
            client.meta.events.unregister("before-parameter-build", self._record)
            self._attached.discard(id(client))

    def _record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        self.calls.append(AwsCall(service, model.name, dict(params)))

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> list[AwsCall]:
        return self.calls[mark:]

    @staticmethod
    def summary(calls: Iterable[AwsCall]) -> dict[str, int]:
        return dict(Counter(f"{call.service}:{call.operation}" for call in calls))


@dataclass
class AwsTimer:
    """Time spent inside AWS calls (serialise, send, moto's answer, parse): `before-call` to `after-call`."""

    total: float = 0.0

    def attach(self, *clients: Any) -> AwsTimer:
        for client in {id(c): c for c in clients}.values():
            client.meta.events.register("before-call", self._start)
            client.meta.events.register("after-call", self._stop)
        return self

    def detach(self, *clients: Any) -> None:
        for client in {id(c): c for c in clients}.values():
            client.meta.events.unregister("before-call", self._start)
            client.meta.events.unregister("after-call", self._stop)

    def _start(self, context: dict[str, Any], **_: Any) -> None:
        context["aws_timer_started"] = time.perf_counter()

    def _stop(self, context: dict[str, Any], **_: Any) -> None:
        started = context.pop("aws_timer_started", None)
        if started is not None:
            self.total += time.perf_counter() - started
