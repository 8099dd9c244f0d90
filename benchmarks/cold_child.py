"""One fresh process of the cold-start benchmark: `python cold_child.py SPEC.json OUT.json`.

Runs as a Lambda execution environment would: the handler module is imported (INIT), then it
is invoked; AWS is a moto server on loopback (`AWS_ENDPOINT_URL`), so nothing of boto3 or the
service is imported before the clock starts. Measures:

- import: loading the handler module (and everything it imports);
- first-call initialisation: the first invocation minus the median of the following ones
  (what a warm call would have cost is taken out: the AWS round trips, the real work);
- peak memory (ru_maxrss) after the calls;
- the same two on the process's CPU time (`time.process_time`, every thread): the machine the
  benchmark runs on is shared, and CPU time is what a loaded machine stretches least (a cold
  start is CPU-bound imports; moto's work is in another process).

`kind: "bare"` is the baseline: a handler that imports boto3, creates the same clients with
the service's client configuration and makes one cheap call on each, measured the same way.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import resource
import statistics
import sys
import time
from typing import Any


class Context:
    function_name = "bench"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def bare_handler_factory(services: list[str], resources: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)
    clients = {service: boto3.client(service, config=config) for service in services}

    def handler(event: Any, context: Any) -> dict[str, Any]:
        for service, client in clients.items():
            if service == "dynamodb":
                client.get_item(TableName=resources["users_table"], Key={"pk": {"S": "USER#x"}, "sk": {"S": "QUOTA"}})
            elif service == "kms":
                client.describe_key(KeyId=resources["key_id"])
            elif service == "s3":
                client.list_objects_v2(Bucket=resources["bucket"], MaxKeys=1)
            elif service == "stepfunctions":
                client.describe_state_machine(stateMachineArn=resources["state_machine_arn"])
            elif service == "ecs":
                client.describe_clusters(clusters=[resources["cluster_arn"]])
        return {"ok": True}

    return handler


def main() -> None:
    with open(sys.argv[1]) as spec_file:
        spec = json.load(spec_file)
    out_path = sys.argv[2]
    os.environ.update(spec["environment"])
    sys.path[:0] = spec["sys_path"]
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved_stdout = os.dup(1)
    os.dup2(devnull, 1)  # handlers log and print metrics to stdout, as in Lambda
    context = Context()
    events = spec["events"]

    started, started_cpu = time.perf_counter(), time.process_time()
    if spec["kind"] == "bare":
        handler = bare_handler_factory(spec["services"], spec["resources"])
    else:
        module_spec = importlib.util.spec_from_file_location("lambda_function", spec["handler_file"])
        assert module_spec and module_spec.loader
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["lambda_function"] = module
        module_spec.loader.exec_module(module)
        handler = getattr(module, spec["handler_name"])
    import_seconds = time.perf_counter() - started
    import_cpu_seconds = time.process_time() - started_cpu

    durations = []
    cpu_durations = []
    results = []
    for event in events:
        os.environ["_X_AMZN_TRACE_ID"] = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
        began, began_cpu = time.perf_counter(), time.process_time()
        result = handler(event, context)
        durations.append(time.perf_counter() - began)
        cpu_durations.append(time.process_time() - began_cpu)
        results.append(result)
    first_call_extra = durations[0] - statistics.median(durations[1:])
    first_call_extra_cpu = cpu_durations[0] - statistics.median(cpu_durations[1:])
    peak_kb = _peak_kb()

    import botocore.client

    services = sorted(
        {obj.meta.service_model.service_name for obj in gc.get_objects() if isinstance(obj, botocore.client.BaseClient)}
    )
    os.dup2(saved_stdout, 1)
    with open(out_path, "w") as out:
        json.dump(
            {
                "import_s": import_seconds,
                "first_call_s": durations[0],
                "warm_s": durations[1:],
                "first_call_extra_s": first_call_extra,
                "cold_s": import_seconds + first_call_extra,
                "import_cpu_s": import_cpu_seconds,
                "first_call_extra_cpu_s": first_call_extra_cpu,
                "cold_cpu_s": import_cpu_seconds + first_call_extra_cpu,
                "peak_rss_mb": peak_kb / 1024,
                "clients": services,
                "results": [_summarize(result) for result in results],
            },
            out,
        )


def _peak_kb() -> int:
    """VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would report the parent's size."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _summarize(result: Any) -> Any:
    if isinstance(result, dict) and "statusCode" in result:
        return {"statusCode": result["statusCode"], "body": str(result.get("body"))[:300]}
    return json.loads(json.dumps(result, default=str))[:300] if isinstance(result, list) else str(result)[:300]


if __name__ == "__main__":
    main()
