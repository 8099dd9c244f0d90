"""Warm create: the ApiFunction handler's own time per POST /api/conversations, AWS answered
in-process by moto (`mock_aws`), and the AWS calls one create makes, counted with botocore hooks
on the service's shared clients.

Requests go round-robin over a small set of users with the template's default limit (3) and
policy (close_oldest): each user's first three creates take a free slot, every later one closes
the least recently active conversation in the same transaction, as in steady use.

Baseline (same run, same process, same moto): one bare `PutItem` round trip of a small item.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import AwsTimer, CallCounter, percentile, use_fake_aws

AIM_CALLS = 3
AIM_CALLS_AT_LIMIT = 4  # issue 11: the replacing transaction and the victim's Query
PRUNE_EVERY = 10
REPLAYS = 500
REQUEST = {"repository": "owner/repo", "selected_branch": "develop", "initial_user_msg": "Add a CONTRIBUTING.md"}


@contextmanager
def quiet_stdout() -> Any:
    """Handlers print logs and EMF metrics to stdout, as in Lambda: written, to /dev/null."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def run(requests: int = 2000, users: int = 10, log: Any = print) -> dict[str, Any]:
    use_fake_aws()
    os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
    from moto import mock_aws

    from benchmarks.fixtures import seed_stack
    from benchmarks.stubs import service_with_stub_remote
    from tests.support.api_gateway import FakeLambdaContext, api_event

    with mock_aws(), tempfile.TemporaryDirectory(prefix="bench-warm-") as temporary:
        stack = seed_stack(
            Path(temporary), overrides={"MAX_ACTIVE_CONVERSATIONS": "3", "CONCURRENCY_POLICY": "close_oldest"}
        )
        os.environ["POWERTOOLS_METRICS_DISABLED"] = "false"  # the handler flushes its metrics, as deployed
        from conversation_service.dal import aws

        handler = stack.runtime.handler("ApiFunction")
        module = sys.modules[handler.__module__]
        service_with_stub_remote(module)
        user_ids = [f"warm-user-{index}" for index in range(users)]
        for user_id in user_ids:
            stack.add_user(user_id, git_token=True)
        stack.add_user("plain-user", git_token=False)
        clients = (aws.client("dynamodb"), aws.client("kms"), aws.client("s3"))
        counter = CallCounter().attach(*clients)
        aws_timer = AwsTimer().attach(*clients)
        context = FakeLambdaContext()

        def create(user_id: str, body: dict[str, Any], key: str | None = None) -> tuple[float, float, list[Any]]:
            """(handler time, of which inside AWS calls, the calls)"""
            headers = {"Idempotency-Key": key} if key else None
            event = api_event("POST", "/api/conversations", body, user_id=user_id, headers=headers)
            mark = counter.mark()
            in_aws = aws_timer.total
            began = time.perf_counter()
            response = handler(event, context)
            elapsed = time.perf_counter() - began
            if response["statusCode"] != 200:
                raise RuntimeError(f"create failed: {response}")
            return elapsed, aws_timer.total - in_aws, counter.since(mark)

        pruner = ClosedConversationPruner(stack.resources.physical["ConversationsTable"])

        with quiet_stdout():
            for _ in range(20):  # warm-up: first-call initialisation is the cold-start benchmark's
                create("plain-user", REQUEST)
            timings: dict[str, list[float]] = {"free_slot": [], "at_limit": []}
            own_times: dict[str, list[float]] = {"free_slot": [], "at_limit": []}
            all_times: list[float] = []
            all_own: list[float] = []
            calls_per_path: dict[str, dict[str, int]] = {}
            free_slot_calls: list[Any] = []
            for index in range(requests):
                if index % PRUNE_EVERY == 0:
                    pruner.prune()  # untimed: keeps moto's table-sized costs out of the figures
                elapsed, in_aws, calls = create(user_ids[index % users], REQUEST)
                # At the limit a create queries the least recently active conversation to close.
                path = "at_limit" if any(call.operation == "Query" for call in calls) else "free_slot"
                timings[path].append(elapsed)
                own_times[path].append(elapsed - in_aws)
                all_times.append(elapsed)
                all_own.append(elapsed - in_aws)
                calls_per_path.setdefault(path, CallCounter.summary(calls))
                if path == "free_slot" and not free_slot_calls:
                    free_slot_calls = calls
            counted = _count_scenarios(stack, create)
            counter.detach(*clients)
            replay = _replay_baseline(free_slot_calls, min(requests, REPLAYS), pruner)
            baseline = _put_item_baseline(stack, min(requests, REPLAYS))
        aws_timer.detach(*clients)

    base_p50 = percentile(baseline, 50)
    result: dict[str, Any] = {
        "requests": requests,
        "users": users,
        "limit": 3,
        "policy": "close_oldest",
        "p50_ms": 1000 * percentile(all_times, 50),
        "p99_ms": 1000 * percentile(all_times, 99),
        "own_p50_ms": 1000 * percentile(all_own, 50),
        "own_p99_ms": 1000 * percentile(all_own, 99),
        "paths": {
            path: {
                "requests": len(times),
                "p50_ms": 1000 * percentile(times, 50),
                "p99_ms": 1000 * percentile(times, 99),
                "own_p50_ms": 1000 * percentile(own_times[path], 50),
                "own_p99_ms": 1000 * percentile(own_times[path], 99),
                "aws_calls": calls_per_path.get(path, {}),
            }
            for path, times in timings.items()
            if times
        },
        "baseline_put_item_p50_ms": 1000 * base_p50,
        "baseline_replay_p50_ms": 1000 * percentile(replay, 50),
        "baseline_replay_p99_ms": 1000 * percentile(replay, 99),
        "baseline_put_item_p99_ms": 1000 * percentile(baseline, 99),
        "aim_calls": AIM_CALLS,
        "aim_calls_at_limit": AIM_CALLS_AT_LIMIT,
        "scenarios": counted,
    }
    result["p50_ratio"] = result["p50_ms"] / result["baseline_put_item_p50_ms"]
    result["p99_ratio"] = result["p99_ms"] / result["baseline_put_item_p50_ms"]
    free = result["paths"]["free_slot"]
    free["replay_ratio_p50"] = free["p50_ms"] / result["baseline_replay_p50_ms"]
    free["replay_ratio_p99"] = free["p99_ms"] / result["baseline_replay_p99_ms"]
    log(f"  warm create p50 {result['p50_ms']:.2f} ms ({result['p50_ratio']:.1f}x PutItem)")
    return result


def _count_scenarios(stack: Any, create: Any) -> dict[str, Any]:
    """The AWS calls of one create, per situation, counted (not estimated), each for a fresh user."""
    scenarios: dict[str, Any] = {}

    def user(git_token: bool) -> str:
        user_id = f"count-{uuid.uuid4().hex[:8]}"
        stack.add_user(user_id, git_token=git_token)
        return user_id

    def record(name: str, calls: list[Any]) -> None:
        scenarios[name] = {"calls": len(calls), "by_operation": CallCounter.summary(calls)}

    record("free slot, no repository", create(user(False), {"initial_user_msg": "hi"})[2])
    record("free slot, repository, no git token for its provider", create(user(False), REQUEST)[2])
    with_token = user(True)
    record("free slot, repository, user's github token opened (common path)", create(with_token, REQUEST)[2])
    key = uuid.uuid4().hex
    record("as above with an Idempotency-Key (first request)", create(with_token, REQUEST, key)[2])
    record("the same Idempotency-Key replayed", create(with_token, REQUEST, key)[2])
    create(with_token, REQUEST)  # the third active conversation
    record("at the limit (close_oldest closes the least recently active)", create(with_token, REQUEST)[2])
    return scenarios


class ClosedConversationPruner:
    """Deletes closed (STOPPED) conversations between batches, with a client of its own.

    moto answers TransactWriteItems after deep-copying the whole table (stream records included)
    and a GSI query by scanning it: left to grow, moto's cost would swamp the handler's, while
    DynamoDB's latency does not grow with the table. Active conversations are kept."""

    def __init__(self, table: str) -> None:
        import boto3

        self._table = table
        self._client = boto3.client("dynamodb")

    def prune(self) -> None:
        scan = self._client.scan(
            TableName=self._table,
            FilterExpression="conversation_status = :stopped",
            ExpressionAttributeValues={":stopped": {"S": "STOPPED"}},
            ProjectionExpression="conversation_id",
        )
        for item in scan["Items"]:
            self._client.delete_item(TableName=self._table, Key={"conversation_id": item["conversation_id"]})
        # moto keeps every stream record forever and deep-copies them with the table in each
        # transaction; DynamoDB trims its stream after 24 h and never copies it. (moto is pinned.)
        from moto.dynamodb.models import dynamodb_backends

        table = dynamodb_backends["123456789012"]["us-east-1"].get_table(self._table)
        if table.stream_shard is not None:
            table.stream_shard.items.clear()


def _replay_baseline(calls: list[Any], requests: int, pruner: ClosedConversationPruner) -> list[float]:
    """The same AWS calls as one free-slot create, made bare (no handler): the handler's overhead
    over the work AWS does for it. Each replay writes a fresh (closed) conversation item."""
    from botocore import xform_name
    from conversation_service.dal import aws

    times = []
    for index in range(requests):
        if index % PRUNE_EVERY == 0:
            pruner.prune()
        prepared = []
        for call in calls:
            params = copy.deepcopy(call.params)
            for entry in params.get("TransactItems", []):
                if "Put" in entry:
                    item = entry["Put"]["Item"]
                    item["conversation_id"] = {"S": uuid.uuid4().hex}
                    item["conversation_status"] = {"S": "STOPPED"}  # pruned like the others
                    item.pop("active_user_id", None)
                if "Update" in entry:
                    entry["Update"]["ExpressionAttributeValues"][":limit"] = {"N": "1000000000"}
            prepared.append((getattr(aws.client(call.service), xform_name(call.operation)), params))
        began = time.perf_counter()
        for method, params in prepared:
            method(**params)
        times.append(time.perf_counter() - began)
    return times


def _put_item_baseline(stack: Any, requests: int) -> list[float]:
    from conversation_service.dal import aws

    client = aws.client("dynamodb")
    # A table of its own, which no create touches: the items written here must not slow the others.
    table = "warm-create-baseline"
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    times = []
    for index in range(requests):
        item = {"id": {"S": f"baseline#{index}"}, "value": {"S": "x" * 200}}
        began = time.perf_counter()
        client.put_item(TableName=table, Item=item)
        times.append(time.perf_counter() - began)
    return times
