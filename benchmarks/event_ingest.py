"""Agent event ingest (`POST /sandbox/v1/agent-events`): Lambda time, DynamoDB and S3 units and
cost per event, through the real SandboxApiFunction handler on moto.

A conversation is created and driven to RUNNING as benchmarks/cost.py does; then the agent's
events are posted as the agent-server's webhook sends them (batches of `BATCH`, its default
`event_buffer_size`), in a mix like a coding session's: per ten events three actions (~0.6 KB),
three command observations (~2 KB of output), three messages and state changes (~0.4 KB) and
one big observation (~24 KB of output, whose body goes to S3). The first batches warm the function
up (and open the conversation's secrets for redaction, once per process per five minutes): not
counted.

Baseline, in the same run: the same events written the naive way, one plain `PutItem` of the
raw JSON each (no redaction, no order, no deduplication, no S3), timed the same way.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from benchmarks import prices
from benchmarks.common import AwsTimer, CallCounter, median, percentile

BATCH = 5
WARM_BATCHES = 4
AWS_CALL_ALLOWANCE_MS = 10.0  # as benchmarks/cost.py: an AWS round trip from Lambda


def _event(index: int) -> dict[str, Any]:
    kind = index % 10
    base = {
        "id": str(uuid.uuid4()),
        "timestamp": f"2026-12-01T19:{index // 60000:02d}:{index // 1000 % 60:02d}.{index % 1000:03d}000",
    }
    if kind in (0, 3, 6):
        command = f"cd /workspace/repo && python -m pytest tests/test_parser.py -k case_{index} -x -q"
        return base | {
            "source": "agent",
            "kind": "ActionEvent",
            "thought": [{"type": "text", "text": "Run the parser tests to see which case fails. " * 3}],
            "action": {"kind": "TerminalAction", "command": command, "is_input": False, "timeout": None},
            "tool_name": "terminal",
            "tool_call_id": f"call_{index}",
            "llm_response_id": f"resp_{index}",
            "security_risk": "LOW",
        }
    if kind in (1, 4, 7, 9):
        lines = 30 if kind != 9 else 360
        output = "\n".join(f"tests/test_parser.py::test_case_{n} PASSED [{n}%]" for n in range(lines))
        return base | {
            "source": "environment",
            "kind": "ObservationEvent",
            "observation": {
                "kind": "TerminalObservation",
                "content": [{"type": "text", "text": output}],
                "exit_code": 0,
                "command": "python -m pytest",
            },
            "tool_name": "terminal",
            "tool_call_id": f"call_{index - 1}",
            "action_id": str(uuid.uuid4()),
        }
    return base | {
        "source": "agent",
        "kind": "MessageEvent",
        "llm_message": {"role": "assistant", "content": [{"type": "text", "text": f"The failing case is {index}."}]},
        "activated_skills": [],
    }


def run(events: int = 1000, log: Any = print) -> dict[str, Any]:
    from benchmarks.cost import _Observer, _one_conversation, creation_stack, memory_sizes
    from benchmarks.dynamodb_units import CapacityMeter
    from benchmarks.warm_create import quiet_stdout
    from tests.support.api_gateway import api_event

    with creation_stack("bench-ingest-") as (stack, runtime, session, pump):
        from conversation_service.dal import aws

        observer = _Observer(stack, session)
        with quiet_stdout():
            _one_conversation(stack, runtime, pump, observer)
            conversation_id = str(
                session.client("dynamodb").scan(TableName=stack.resources.physical["ConversationsTable"])["Items"][0][
                    "conversation_id"
                ]["S"]
            )
        token = observer.sandbox_token(conversation_id)

        def post(batch: list[dict[str, Any]]) -> dict[str, Any]:
            event = api_event(
                "POST",
                "/sandbox/v1/agent-events",
                {"events": batch},
                user_id=None,
                headers={"Authorization": f"Bearer {token}"},
            )
            event["resource"] = "/sandbox/{proxy+}"
            answer: dict[str, Any] = runtime.invoke("SandboxApiFunction", event)
            if answer["statusCode"] != 200:
                raise RuntimeError(f"ingest answered {answer}")
            return answer

        payloads = [_event(index) for index in range((events // BATCH + WARM_BATCHES) * BATCH)]
        batches = [payloads[start : start + BATCH] for start in range(0, len(payloads), BATCH)]
        counter = CallCounter()
        timer = AwsTimer()
        metered = [aws.client(name) for name in ("dynamodb", "kms", "s3")]
        meter = CapacityMeter(reader=session.client("dynamodb"))
        durations: list[float] = []
        own: list[float] = []
        half = WARM_BATCHES + (len(batches) - WARM_BATCHES) // 2
        with quiet_stdout():
            for batch in batches[:WARM_BATCHES]:
                post(batch)
            # First half timed (the meter reads items around every write: it would be in the time).
            timer.attach(*metered)
            for batch in batches[WARM_BATCHES:half]:
                began, inside = time.perf_counter(), timer.total
                post(batch)
                durations.append(time.perf_counter() - began)
                own.append(durations[-1] - (timer.total - inside))
            timer.detach(*metered)
            # Second half counted: calls and request units.
            counter.attach(*metered)
            meter.attach(aws.client("dynamodb"))
            for batch in batches[half:]:
                post(batch)
            counter.detach(*metered)
            meter.detach(aws.client("dynamodb"))
        counted_batches = len(batches) - half
        reads, writes = (units / (counted_batches * BATCH) for units in meter.totals())
        calls = CallCounter.summary(counter.calls)

        # Baseline: the same events, one plain PutItem of the raw JSON each, on the same backend.
        table = stack.resources.physical["ChannelTable"]
        dynamodb = aws.client("dynamodb")
        baseline: list[float] = []
        for batch in batches[WARM_BATCHES:half]:
            began = time.perf_counter()
            for item in batch:
                dynamodb.put_item(TableName=table, Item=_naive_item(item))
            baseline.append(time.perf_counter() - began)
        baseline_meter = CapacityMeter(reader=session.client("dynamodb")).attach(dynamodb)
        for batch in batches[half:]:
            for item in batch:
                dynamodb.put_item(TableName=table, Item=_naive_item(item) | {"sk": {"S": "counted-" + item["id"]}})
        baseline_meter.detach(dynamodb)
        baseline_writes = baseline_meter.totals()[1] / (counted_batches * BATCH)

    memory_mb = memory_sizes()["SandboxApiFunction"]
    calls_per_batch = len(counter.calls) / counted_batches
    batch_ms = 1000 * median(durations)
    # Billed: the handler's own time plus an allowance per AWS call (moto's in-process transaction
    # is far slower than DynamoDB's, so the measured wall time would overstate it).
    own_batch_ms = 1000 * median(own)
    billed_ms = own_batch_ms + AWS_CALL_ALLOWANCE_MS * calls_per_batch
    per_event = {name: count / (counted_batches * BATCH) for name, count in calls.items()}
    s3_puts = per_event.get("s3:PutObject", 0.0)
    kms_requests = sum(n for op, n in per_event.items() if op.startswith("kms:"))
    invocations = 1000 / BATCH
    lines: list[dict[str, Any]] = [
        {
            "item": "Lambda (requests + GB-s, arm64)",
            "quantity": f"{invocations:g} invocations x {billed_ms:.1f} ms billed (est.), {memory_mb} MB",
            "cost": invocations
            * (prices.LAMBDA_PER_REQUEST + (memory_mb / 1024) * (billed_ms / 1000) * prices.LAMBDA_ARM64_PER_GB_SECOND),
        },
        {
            "item": "API Gateway REST",
            "quantity": f"{invocations:g} requests",
            "cost": invocations * prices.API_GATEWAY_REST_PER_REQUEST,
        },
        {
            "item": "DynamoDB on-demand writes",
            "quantity": f"{writes * 1000:g} WRU",
            "cost": writes * 1000 * prices.DYNAMODB_PER_WRITE_UNIT,
        },
        {
            "item": "DynamoDB on-demand reads",
            "quantity": f"{reads * 1000:g} RRU",
            "cost": reads * 1000 * prices.DYNAMODB_PER_READ_UNIT,
        },
        {
            "item": "S3 PUT (bodies over 8 KB)",
            "quantity": f"{s3_puts * 1000:g} PUT",
            "cost": s3_puts * 1000 * prices.S3_PER_PUT,
        },
        {
            "item": "KMS (secrets opened for redaction, once per process per 5 min)",
            "quantity": f"{kms_requests * 1000:g} requests",
            "cost": kms_requests * 1000 * prices.KMS_PER_REQUEST,
        },
    ]
    total = sum(float(line["cost"]) for line in lines)
    per_event_ms = batch_ms / BATCH
    baseline_per_event_ms = 1000 * median(baseline) / BATCH
    log(
        f"  ingest {per_event_ms:.2f} ms/event ({own_batch_ms / BATCH:.2f} own), {writes:.2f} WRU/event, "
        f"${total:.5f} per 1000 events"
    )
    return {
        "events_timed": len(durations) * BATCH,
        "events_counted": counted_batches * BATCH,
        "batch_size": BATCH,
        "prices_as_of": prices.AS_OF,
        "aws_call_allowance_ms": AWS_CALL_ALLOWANCE_MS,
        "memory_mb": memory_mb,
        "batch_p50_ms": batch_ms,
        "batch_p95_ms": 1000 * percentile(durations, 95),
        "per_event_ms": per_event_ms,
        "own_per_event_ms": own_batch_ms / BATCH,
        "billed_ms_per_batch": billed_ms,
        "aws_calls_per_batch": calls_per_batch,
        "calls_per_event": per_event,
        "write_units_per_event": writes,
        "read_units_per_event": reads,
        "s3_puts_per_event": s3_puts,
        "lines": lines,
        "cost_per_1000_events": total,
        "baseline_per_event_ms": baseline_per_event_ms,
        "baseline_write_units_per_event": baseline_writes,
        "time_ratio": per_event_ms / baseline_per_event_ms,
        "write_units_ratio": writes / baseline_writes,
    }


def _naive_item(event: dict[str, Any]) -> dict[str, Any]:
    return {"conversation_id": {"S": "baseline"}, "sk": {"S": event["id"]}, "body": {"S": json.dumps(event)}}
