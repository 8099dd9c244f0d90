"""Cold start and peak memory of every function, against a bare boto3 handler.

For each function in functions/*/app.py, `runs` fresh processes (benchmarks/cold_child.py) each
import the handler and invoke it with a representative event (1 first call + 3 warm ones), AWS
being a moto server on loopback. The baseline is a bare handler that imports boto3, creates the
same clients (found in the real function's process after its calls) with the service's client
configuration, and makes one call on each, measured in the same way, in the same run.

Lambda's environment is reproduced where it changes the work done: the function's environment
from template.yaml, tracing on (Powertools Tracer patches botocore; a trace header per call),
metrics and logs to stdout (sent to /dev/null here), bytecode compiled beforehand (as for the
site-packages boto3 comes with).
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import FAKE_AWS, FUNCTIONS_DIR, LAYER, median
from benchmarks.fixtures import SeededStack, git_http_server, moto_server, seed_stack

CHILD = Path(__file__).with_name("cold_child.py")
WARM_CALLS = 3
AIM_RATIO = 1.5


def _lambda_environment(stack: SeededStack, logical_id: str, endpoint: str) -> dict[str, str]:
    spec = stack.resources.functions[logical_id]
    rewrite = {}
    if stack.github_rewrite:
        rewrite["GIT_URL_REWRITES"] = json.dumps({"https://github.com/": stack.github_rewrite})
    return {
        **rewrite,
        **FAKE_AWS,
        **spec.environment,
        "ALLOW_LOCAL_REPOSITORIES": "true",
        "MAX_ACTIVE_CONVERSATIONS": "1000",
        "SANDBOX_API_URL": "http://127.0.0.1:9/sandbox",
        "AWS_ENDPOINT_URL": endpoint,
        # What Lambda sets: Powertools reads these (the tracer is on only inside Lambda).
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "LAMBDA_TASK_ROOT": str(spec.code_dir),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "POWERTOOLS_TRACE_DISABLED": "false",
    }


def _run_child(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    spec_path = work / "spec.json"
    out_path = work / "out.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    completed = subprocess.run(
        [sys.executable, str(CHILD), str(spec_path), str(out_path)],
        cwd=str(work),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"cold-start child failed ({completed.returncode}): {completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


def _check_results(logical_id: str, result: dict[str, Any]) -> None:
    """A benchmark of a handler that failed would measure the wrong thing: refuse it."""
    for answer in result["results"]:
        if isinstance(answer, dict) and "statusCode" in answer and answer["statusCode"] >= 300:
            raise RuntimeError(f"{logical_id} answered {answer}")
        if isinstance(answer, str) and "batchItemFailures': [{" in answer:
            raise RuntimeError(f"{logical_id} answered {answer}")


def run(runs: int = 10, log: Any = print) -> dict[str, Any]:
    compileall.compile_dir(str(LAYER), quiet=1)
    compileall.compile_dir(str(FUNCTIONS_DIR), quiet=1)
    with contextlib.ExitStack() as cleanup:
        work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-cold-")))
        endpoint = cleanup.enter_context(moto_server())
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        cleanup.callback(os.environ.pop, "AWS_ENDPOINT_URL", None)
        stack = seed_stack(work)
        stack.github_rewrite = cleanup.enter_context(git_http_server({"/user/repo.git": stack.repository}))
        stack.github_repository = True
        functions = sorted(
            (spec for spec in stack.resources.functions.values()),
            key=lambda spec: spec.logical_id,
        )
        on_disk = {path.parent.name for path in FUNCTIONS_DIR.glob("*/app.py")}
        covered = {Path(spec.code_dir).name for spec in functions}
        if on_disk - covered:
            raise RuntimeError(f"functions without a template resource: {sorted(on_disk - covered)}")
        figures: dict[str, Any] = {}
        client_sets: dict[str, list[str]] = {}
        for spec in functions:
            module, handler_name = spec.handler.rsplit(".", 1)
            samples = []
            try:
                stack.event_for(spec.logical_id)
            except KeyError:
                log(f"  cold start {spec.logical_id}: no representative event in benchmarks/fixtures.py: skipped")
                continue
            for _ in range(runs):
                events = [stack.event_for(spec.logical_id) for _ in range(1 + WARM_CALLS)]
                child_spec = {
                    "kind": "function",
                    "environment": _lambda_environment(stack, spec.logical_id, endpoint),
                    "sys_path": [str(LAYER), str(spec.code_dir)],
                    "handler_file": str(Path(spec.code_dir) / f"{module}.py"),
                    "handler_name": handler_name,
                    "events": events,
                }
                result = _run_child(child_spec, work)
                _check_results(spec.logical_id, result)
                samples.append(result)
            clients = samples[0]["clients"]
            client_sets[spec.logical_id] = clients
            figures[spec.logical_id] = {
                "function_dir": f"functions/{Path(spec.code_dir).name}",
                "clients": clients,
                "runs": runs,
                "import_ms": 1000 * median(s["import_s"] for s in samples),
                "first_call_extra_ms": 1000 * median(s["first_call_extra_s"] for s in samples),
                "cold_ms": 1000 * median(s["cold_s"] for s in samples),
                "warm_call_ms": 1000 * median(x for s in samples for x in s["warm_s"]),
                "peak_rss_mb": median(s["peak_rss_mb"] for s in samples),
            }
            log(f"  cold start {spec.logical_id}: {figures[spec.logical_id]['cold_ms']:.0f} ms")
        baselines: dict[str, Any] = {}
        for clients in sorted({tuple(c) for c in client_sets.values()}):
            samples = []
            for _ in range(runs):
                child_spec = {
                    "kind": "bare",
                    "environment": {**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint},
                    "sys_path": [],
                    "services": list(clients),
                    "resources": stack.handles,
                    "events": [{}] * (1 + WARM_CALLS),
                }
                samples.append(_run_child(child_spec, work))
            key = "+".join(clients) or "(none)"
            baselines[key] = {
                "clients": list(clients),
                "import_ms": 1000 * median(s["import_s"] for s in samples),
                "cold_ms": 1000 * median(s["cold_s"] for s in samples),
                "peak_rss_mb": median(s["peak_rss_mb"] for s in samples),
            }
            log(f"  cold start baseline {key}: {baselines[key]['cold_ms']:.0f} ms")
        for figure in figures.values():
            baseline = baselines["+".join(figure["clients"]) or "(none)"]
            figure["baseline_cold_ms"] = baseline["cold_ms"]
            figure["baseline_peak_rss_mb"] = baseline["peak_rss_mb"]
            figure["ratio"] = figure["cold_ms"] / baseline["cold_ms"]
            figure["meets_aim"] = figure["ratio"] <= AIM_RATIO
        profile = _import_profile(stack, endpoint, work)
        return {"aim_ratio": AIM_RATIO, "functions": figures, "baselines": baselines, "import_profile": profile}


def _import_profile(stack: SeededStack, endpoint: str, work: Path, top: int = 12) -> list[dict[str, Any]]:
    """`python -X importtime` of the API handler: the packages that cost the most to import."""
    spec = stack.resources.functions["ApiFunction"]
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        **_lambda_environment(stack, "ApiFunction", endpoint),
        "PYTHONPATH": f"{LAYER}:{spec.code_dir}",
    }
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import app"],
        cwd=str(work),
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    totals: dict[str, int] = {}
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|", 2)
        package = name.strip().split(".")[0]
        totals[package] = totals.get(package, 0) + int(self_us.strip())
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return [{"package": package, "self_ms": micros / 1000} for package, micros in ranked]


if __name__ == "__main__":
    print(json.dumps(run(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=2))
