"""Fault injection on boto3 clients through botocore's event hooks.

Two kinds, as the service would meet them:

- `persistent`: what reaches the service after botocore's own retries gave up. A `before-call`
  hook answers the call with an AWS error (throttling, 5xx) before anything is sent, or raises
  a ReadTimeoutError; moto never sees the request (nothing is applied).
- `transient`: the first `times` attempts fail with a ReadTimeoutError raised in `before-send`
  (registered first, so before moto's own handler: the attempt is not applied), and botocore's
  retry (standard mode, 3 attempts, the service's client config) sends it again.

Every rule names a service and operation, and may skip the first `skip` calls (to fault the
second TransactWriteItems of a create at the limit, say).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

THROTTLE = {"dynamodb": "ProvisionedThroughputExceededException"}
STATUS = {"throttle": 400, "5xx": 500, "unavailable": 503, "refused": 400}


def error_code(service: str, kind: str) -> str:
    if kind == "throttle":
        return THROTTLE.get(service, "ThrottlingException")
    if kind == "unavailable":
        return "ServiceUnavailable"
    return {"dynamodb": "InternalServerError", "kms": "KMSInternalException", "ecs": "ServerException"}.get(
        service, "InternalServerError" if service != "s3" else "InternalError"
    )


@dataclass
class Rule:
    service: str
    operation: str
    kind: str  # throttle | 5xx | unavailable | timeout | refused
    mode: str = "persistent"  # persistent | transient
    times: int = 1_000_000  # how many calls (persistent) or attempts (transient) fail
    skip: int = 0
    code: str | None = None  # an error code of its own (kind "refused": a 400 with this code)
    seen: int = 0
    fired: int = 0


@dataclass
class FaultInjector:
    rules: list[Rule] = field(default_factory=list)
    bodies: dict[str, list[bytes]] = field(default_factory=dict)  # "service:Operation" -> sent bodies
    _clients: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, service: str, operation: str, kind: str, **kwargs: Any) -> Rule:
        rule = Rule(service, operation, kind, **kwargs)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def attach(self, *clients: Any) -> FaultInjector:
        for client in clients:
            if any(client is known for known in self._clients):
                continue
            self._clients.append(client)
            client.meta.events.register("before-call", self._before_call)
            client.meta.events.register_first("before-send", self._before_send)
        return self

    def detach(self) -> None:
        for client in self._clients:
            client.meta.events.unregister("before-call", self._before_call)
            client.meta.events.unregister("before-send", self._before_send)
        self._clients.clear()

    def _match(self, service: str, operation: str, mode: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.mode != mode or rule.service != service or rule.operation != operation:
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip or rule.fired >= rule.times:
                    continue
                rule.fired += 1
                return rule
        return None

    def _before_call(self, model: Any, params: Any, **_: Any) -> Any:
        service = model.service_model.service_name
        rule = self._match(service, model.name, "persistent")
        if rule is None:
            return None
        if rule.kind == "timeout":
            raise ReadTimeoutError(endpoint_url=f"https://{service}.us-east-1.amazonaws.com/")
        code = rule.code or error_code(service, rule.kind)
        status = STATUS[rule.kind]
        parsed = {
            "Error": {"Code": code, "Message": f"injected {rule.kind}"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": 2},
        }
        if model.name == "TransactWriteItems" and rule.kind == "throttle":
            parsed["Error"]["Code"] = "ThrottlingException"
        return AWSResponse(f"https://{service}.amazonaws.com/", status, {}, None), parsed

    def _before_send(self, request: Any, **kwargs: Any) -> None:
        event_name = kwargs.get("event_name", "")
        _, service_id, operation = event_name.split(".", 2)
        service = {"dynamodb": "dynamodb", "kms": "kms", "s3": "s3", "sfn": "stepfunctions", "ecs": "ecs"}.get(
            service_id, service_id
        )
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        self.bodies.setdefault(f"{service}:{operation}", []).append(body)
        if self._match(service, operation, "transient") is not None:
            raise ReadTimeoutError(endpoint_url=request.url)
