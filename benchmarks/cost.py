"""Cost per created conversation on AWS (Fargate excluded), from what one creation really does.

`conversations` conversations are created one after another through the real handlers, with
moto's Step Functions engine executing the real ASL (as tests/integration does) and a scripted
sandbox speaking the sandbox protocol (docs/sandbox-protocol.md) as the bootstrap does: phase
RUNTIME_STARTED, the context, four more phases, `HEARTBEATS` heartbeats (one per 10 s of a
~30 s start), ready. Counted for each: Lambda invocations and their warm durations, state
transitions (from the execution history), DynamoDB request units (benchmarks/dynamodb_units.py),
KMS and S3 requests, API Gateway requests. Not counted: the client polling GET (priced
separately), CloudWatch Logs and X-Ray, storage, Fargate.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import prices
from benchmarks.common import CallCounter, median, use_fake_aws

HEARTBEATS = 3
SANDBOX_PHASES = (
    "STATUS$SETTING_UP_WORKSPACE",
    "STATUS$RUNNING_SETUP_SCRIPT",
    "STATUS$SETTING_UP_GIT_HOOKS",
    "STATUS$STARTING_AGENT_SERVER",
)
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
# A Lambda function's billed duration on AWS also holds its AWS round trips, which moto answers
# in-process in microseconds: each counted call is charged this much on top of the measured time.
AWS_CALL_ALLOWANCE_MS = 10.0


def memory_sizes() -> dict[str, int]:
    from devstack.template_resources import load_template

    template = load_template()
    default = int(template.get("Globals", {}).get("Function", {}).get("MemorySize", 128))
    return {
        logical_id: int(spec.get("Properties", {}).get("MemorySize", default))
        for logical_id, spec in template["Resources"].items()
        if spec["Type"] == "AWS::Serverless::Function"
    }


@contextmanager
def creation_stack(prefix: str) -> Iterator[tuple[Any, Any, Any, Any]]:
    """moto with the template's resources and the real handlers, the stream pumped to ConversationStreamFunction,
    the git remote answered in-process: (stack, runtime, session, pump)."""
    use_fake_aws()
    os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
    import boto3
    from moto import mock_aws

    from benchmarks.fixtures import seed_stack, template_stream_pump
    from benchmarks.stubs import service_with_stub_remote

    with mock_aws(config=MOTO_CONFIG), tempfile.TemporaryDirectory(prefix=prefix) as temporary:  # type: ignore[arg-type]
        stack = seed_stack(Path(temporary), overrides={"SANDBOX_API_URL": "https://api.example.com/dev/sandbox"})
        runtime = stack.runtime
        runtime.install_into_moto()
        service_with_stub_remote(sys.modules[runtime.handler("ApiFunction").__module__])
        stack.github_repository = True
        session = boto3.Session(region_name="us-east-1")
        yield stack, runtime, session, template_stream_pump(stack.resources, runtime, session)


def run(conversations: int = 6, log: Any = print) -> dict[str, Any]:
    from benchmarks.dynamodb_units import CapacityMeter
    from benchmarks.warm_create import quiet_stdout

    with creation_stack("bench-cost-") as (stack, runtime, session, pump):
        from conversation_service.dal import aws

        durations: dict[str, list[float]] = defaultdict(list)
        invocations: dict[str, int] = defaultdict(int)
        calls_by_function: dict[str, list[Any]] = defaultdict(list)
        counter = CallCounter()
        original_invoke = runtime.invoke

        def timed_invoke(name: str, event: Any) -> Any:
            logical_id = runtime.spec(name).logical_id
            mark = counter.mark()
            began = time.perf_counter()
            try:
                return original_invoke(name, event)
            finally:
                durations[logical_id].append(time.perf_counter() - began)
                invocations[logical_id] += 1
                calls_by_function[logical_id].extend(counter.since(mark))

        runtime.invoke = timed_invoke  # type: ignore[method-assign]
        metered = [aws.client(name) for name in ("dynamodb", "kms", "s3", "stepfunctions", "ecs", "events")]
        published: list[int] = []  # EventBridge entries per PutEvents call
        aws.client("events").meta.events.register(
            "before-parameter-build.events.PutEvents", lambda params, **_: published.append(len(params["Entries"]))
        )
        counter.attach(*metered)
        meter = CapacityMeter(reader=session.client("dynamodb")).attach(aws.client("dynamodb"))
        observer = _Observer(stack, session)
        per_conversation: list[dict[str, Any]] = []
        with quiet_stdout():
            for index in range(conversations + 1):  # the first one warms every function up: not counted
                counter.calls.clear()
                meter.reset()
                published.clear()
                before = dict(invocations)
                transitions = _one_conversation(stack, runtime, pump, observer)
                reads, writes = meter.totals()
                record = {
                    "invocations": {k: invocations[k] - before.get(k, 0) for k in invocations},
                    "calls": CallCounter.summary(counter.calls),
                    "state_transitions": transitions,
                    "eventbridge_entries": sum(published),
                    "dynamodb_read_units": reads,
                    "dynamodb_write_units": writes,
                    "dynamodb_by_table": {
                        table: {"reads": usage.reads, "writes": usage.writes, "index_writes": usage.index_writes}
                        for table, usage in meter.usage.items()
                    },
                }
                if index > 0:
                    per_conversation.append(record)
                else:
                    for logical_id in durations:
                        durations[logical_id].clear()
                        calls_by_function[logical_id].clear()
        counter.detach(*metered)
        meter.detach(aws.client("dynamodb"))

    sample = per_conversation[-1]
    sizes = memory_sizes()
    functions = {}
    for logical_id, count in sorted(sample["invocations"].items()):
        measured_ms = 1000 * median(durations[logical_id])
        calls_per_invocation = len(calls_by_function[logical_id]) / max(1, len(durations[logical_id]))
        billed_ms = measured_ms + AWS_CALL_ALLOWANCE_MS * calls_per_invocation
        gb_seconds = count * (sizes[logical_id] / 1024) * (billed_ms / 1000)
        functions[logical_id] = {
            "invocations": count,
            "memory_mb": sizes[logical_id],
            "measured_ms": measured_ms,
            "aws_calls_per_invocation": calls_per_invocation,
            "billed_ms_estimate": billed_ms,
            "cost": gb_seconds * prices.LAMBDA_ARM64_PER_GB_SECOND + count * prices.LAMBDA_PER_REQUEST,
        }
    calls = sample["calls"]
    kms_requests = sum(n for op, n in calls.items() if op.startswith("kms:"))
    s3_puts = sum(n for op, n in calls.items() if op.startswith("s3:") and op[3:] in prices.S3_PUT_OPERATIONS)
    s3_gets = sum(n for op, n in calls.items() if op.startswith("s3:") and op[3:] not in prices.S3_PUT_OPERATIONS)
    api_requests = sample["invocations"].get("ApiFunction", 0) + sample["invocations"].get("SandboxApiFunction", 0)
    lines = [
        {
            "item": "Lambda (requests + GB-s, arm64)",
            "quantity": f"{sum(f['invocations'] for f in functions.values())} invocations",
            "cost": sum(f["cost"] for f in functions.values()),
        },
        {
            "item": "Step Functions Standard",
            "quantity": f"{sample['state_transitions']} state transitions",
            "cost": sample["state_transitions"] * prices.STEP_FUNCTIONS_PER_TRANSITION,
        },
        {
            "item": "DynamoDB on-demand writes",
            "quantity": f"{sample['dynamodb_write_units']:g} WRU (tables + indexes)",
            "cost": sample["dynamodb_write_units"] * prices.DYNAMODB_PER_WRITE_UNIT,
        },
        {
            "item": "DynamoDB on-demand reads",
            "quantity": f"{sample['dynamodb_read_units']:g} RRU",
            "cost": sample["dynamodb_read_units"] * prices.DYNAMODB_PER_READ_UNIT,
        },
        {"item": "KMS requests", "quantity": f"{kms_requests} requests", "cost": kms_requests * prices.KMS_PER_REQUEST},
        {
            "item": "S3 requests",
            "quantity": f"{s3_puts} PUT, {s3_gets} GET",
            "cost": s3_puts * prices.S3_PER_PUT + s3_gets * prices.S3_PER_GET,
        },
        {
            "item": "EventBridge custom events",
            "quantity": f"{sample['eventbridge_entries']} events",
            "cost": sample["eventbridge_entries"] * prices.EVENTBRIDGE_PER_EVENT,
        },
        {
            "item": "API Gateway REST",
            "quantity": f"{api_requests} requests (1 create + {api_requests - 1} sandbox callbacks)",
            "cost": api_requests * prices.API_GATEWAY_REST_PER_REQUEST,
        },
    ]
    total = sum(line["cost"] for line in lines)
    poll = (
        prices.API_GATEWAY_REST_PER_REQUEST
        + prices.LAMBDA_PER_REQUEST
        + (sizes["ApiFunction"] / 1024)
        * ((functions["ApiFunction"]["billed_ms_estimate"]) / 1000)
        * prices.LAMBDA_ARM64_PER_GB_SECOND
        + 0.5 * prices.DYNAMODB_PER_READ_UNIT
    )
    varying = sorted(
        {
            f"{name} {key}"
            for record in per_conversation
            for name in ("invocations", "calls")
            for key in set(record[name]) | set(sample[name])
            if record[name].get(key) != sample[name].get(key)
        }
        | {
            "state transitions"
            for record in per_conversation
            if record["state_transitions"] != sample["state_transitions"]
        }
    )
    consistent = not varying
    log(f"  cost per conversation ${total:.6f} ({sample['state_transitions']} transitions)")
    return {
        "conversations": conversations,
        "heartbeats": HEARTBEATS,
        "prices_as_of": prices.AS_OF,
        "aws_call_allowance_ms": AWS_CALL_ALLOWANCE_MS,
        "functions": functions,
        "per_conversation": sample,
        "identical_across_conversations": consistent,
        "varying_across_conversations": varying,
        "lines": lines,
        "total": total,
        "per_million_conversations": total * 1_000_000,
        "poll_get_cost": poll,
    }


class _Observer:
    """Reads moto directly (clients of its own, not metered): what a client polling would see."""

    def __init__(self, stack: Any, session: Any) -> None:
        self.stack = stack
        self.dynamodb = session.client("dynamodb")
        self.ecs = session.client("ecs")
        self.sfn = session.client("stepfunctions")
        self.kms = session.client("kms")

    def status(self, conversation_id: str) -> str:
        item = self.dynamodb.get_item(
            TableName=self.stack.resources.physical["ConversationsTable"],
            Key={"conversation_id": {"S": conversation_id}},
            ConsistentRead=True,
        )["Item"]
        return str(item["conversation_status"]["S"])

    def sandbox_token(self, conversation_id: str) -> str | None:
        cluster = self.stack.resources.attributes["SandboxCluster.Arn"]
        arns = self.ecs.list_tasks(cluster=cluster, startedBy=conversation_id)["taskArns"]
        if not arns:
            return None
        task = self.ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"][0]
        environment = task["overrides"]["containerOverrides"][0]["environment"]
        from devstack.task_credentials import open_sealed_sandbox_token

        return open_sealed_sandbox_token(self.kms, environment, conversation_id)

    def execution(self, conversation_id: str) -> tuple[str, list[dict[str, Any]]]:
        arn = self.stack.resources.physical["ConversationWorkflow"].replace(":stateMachine:", ":execution:")
        arn += f":{conversation_id}"
        status = self.sfn.describe_execution(executionArn=arn)["status"]
        events = self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        return str(status), list(events)


def _wait(predicate: Any, pump: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pump.pump_once()
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def _one_conversation(stack: Any, runtime: Any, pump: Any, observer: _Observer) -> int:
    from tests.support.api_gateway import api_event

    authorizer = stack.event_for("AuthorizerFunction")
    assert runtime.invoke("AuthorizerFunction", authorizer)["principalId"] == "bench-user"
    created = runtime.invoke("ApiFunction", stack.event_for("ApiFunction") | {})
    if created["statusCode"] != 200:
        raise RuntimeError(f"create failed: {created}")
    conversation_id = json.loads(created["body"])["conversation_id"]
    token = _wait(lambda: observer.sandbox_token(conversation_id), pump, "the sandbox task")
    # moto accepts heartbeats for the task token only once the launch Lambda has returned (AWS does
    # from the start): a container takes longer than that to boot anyway.
    _wait(
        lambda: any(event["type"] == "TaskSubmitted" for event in observer.execution(conversation_id)[1]),
        pump,
        "the launch step to submit its task",
    )

    def sandbox(method: str, path: str, body: Any = None) -> None:
        event = api_event(method, path, body, user_id=None, headers={"Authorization": f"Bearer {token}"})
        event["resource"] = "/sandbox/{proxy+}"
        event["pathParameters"] = {"proxy": path.removeprefix("/sandbox/")}
        answer = runtime.invoke("SandboxApiFunction", event)
        if answer["statusCode"] != 200:
            raise RuntimeError(f"sandbox {path} answered {answer}")

    sandbox("POST", "/sandbox/v1/events", {"type": "phase", "phase": "STATUS$RUNTIME_STARTED"})
    sandbox("GET", "/sandbox/v1/context")
    for phase in SANDBOX_PHASES:
        sandbox("POST", "/sandbox/v1/events", {"type": "phase", "phase": phase})
        if phase == "STATUS$RUNNING_SETUP_SCRIPT":
            for _ in range(HEARTBEATS):
                sandbox("POST", "/sandbox/v1/events", {"type": "heartbeat"})
    ready = {
        "type": "ready",
        "agent_server_url": "http://127.0.0.1:8000",
        "agent_conversation_id": "a1b2c3",
        "workspace_dir": "/workspace/repo",
        "commit": "b" * 40,
        "microagents": [],
    }
    sandbox("POST", "/sandbox/v1/events", ready)
    _wait(lambda: observer.execution(conversation_id)[0] == "SUCCEEDED", pump, "the execution to succeed")
    if observer.status(conversation_id) != "RUNNING":
        raise RuntimeError(f"{conversation_id} is {observer.status(conversation_id)}")
    _, history = observer.execution(conversation_id)
    return sum(1 for event in history if event["type"].endswith("StateEntered"))
