"""ECS RunTask under load, as AWS answers it: throttled (ThrottlingException) or no Fargate
capacity (a `failures` entry in a 200 answer), decided per call by a seeded coin.

It answers in botocore's `before-call` event, which short-circuits the call: the request never
reaches moto (a `before-send` answer would, since every before-send handler runs)."""

from __future__ import annotations

import random
from typing import Any

from botocore.awsrequest import AWSResponse

CAPACITY_REASON = "Capacity is unavailable at this time. Please try again later or in a different availability zone"


class RunTaskWeather:
    def __init__(self, *, throttled: float, no_capacity: float, seed: int = 13) -> None:
        self.throttled = throttled
        self.no_capacity = no_capacity
        self._random = random.Random(seed)
        self.answers = {"throttled": 0, "no_capacity": 0, "through": 0}

    def attach(self, ecs_client: Any) -> None:
        ecs_client.meta.events.register("before-call.ecs.RunTask", self._before_call)

    def _before_call(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        roll = self._random.random()
        metadata = {"RequestId": "weather", "HTTPStatusCode": 200, "HTTPHeaders": {}, "RetryAttempts": 0}
        if roll < self.throttled:
            self.answers["throttled"] += 1
            error = {"Code": "ThrottlingException", "Message": "Rate exceeded"}
            return AWSResponse("https://ecs", 400, {}, None), {
                "Error": error,
                "ResponseMetadata": {**metadata, "HTTPStatusCode": 400},
            }
        if roll < self.throttled + self.no_capacity:
            self.answers["no_capacity"] += 1
            failure = {"arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/x", "reason": CAPACITY_REASON}
            return AWSResponse("https://ecs", 200, {}, None), {
                "tasks": [],
                "failures": [failure],
                "ResponseMetadata": metadata,
            }
        self.answers["through"] += 1
        return None
