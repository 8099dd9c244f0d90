"""`make bench`: python -m benchmarks [--only cold,warm,cost,ingest,load,roundtrip,start,boot] [--quick] [--no-docs]

Writes benchmarks/results.json and the measured block of docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from typing import Any

from benchmarks.common import ROOT

SECTIONS = ("cold", "warm", "cost", "ingest", "load", "roundtrip", "start", "boot")
RESULTS = ROOT / "benchmarks" / "results.json"
DOCUMENT = ROOT / "docs" / "performance.md"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="fewer runs and requests (a smoke test, not figures)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    arguments = parser.parse_args(argv)
    chosen = [section.strip() for section in arguments.only.split(",") if section.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    started = time.monotonic()
    results: dict[str, Any] = (
        json.loads(RESULTS.read_text()) if RESULTS.exists() and len(chosen) < len(SECTIONS) else {}
    )
    durations: dict[str, float] = dict(results.get("meta", {}).get("section_seconds", {}))
    quick = arguments.quick
    for section in chosen:
        began = time.monotonic()
        _log(f"bench: {section}")
        if section == "cold":
            from benchmarks import cold_start

            results["cold_start"] = cold_start.run(
                runs=int(os.environ.get("BENCH_COLD_ROUNDS", 3 if quick else 10)), log=_log
            )
        elif section == "warm":
            from benchmarks import warm_create

            results["warm_create"] = warm_create.run(requests=200 if quick else 2000, log=_log)
        elif section == "cost":
            from benchmarks import cost

            results["cost"] = cost.run(conversations=2 if quick else 6, log=_log)
        elif section == "ingest":
            from benchmarks import event_ingest

            results["event_ingest"] = event_ingest.run(events=100 if quick else 1000, log=_log)
        elif section == "load":
            from benchmarks import load

            levels = ((1, 1, 20), (5, 5, None)) if quick else load.LEVELS
            results["load"] = load.run(levels, log=_log)
        elif section == "roundtrip":
            from benchmarks import message_round_trip

            results["message_round_trip"] = message_round_trip.run(rounds=5 if quick else 20, log=_log)
        elif section == "start":
            from benchmarks import start

            results["start"] = start.run(
                samples=int(os.environ.get("BENCH_START_SAMPLES", 3 if quick else 10)), log=_log
            )
        elif section == "boot":
            from benchmarks import boot

            results["boot"] = boot.run(samples=1 if quick else 3, log=_log)
        durations[section] = time.monotonic() - began
        _log(f"bench: {section} took {durations[section]:.0f} s")
    results["meta"] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "command": "make bench"
        if len(chosen) == len(SECTIONS) and not quick
        else f"python -m benchmarks --only {','.join(chosen)}",
        "quick": quick,
        "section_seconds": durations,
        "total_seconds": sum(durations.values()),
        "this_run_seconds": time.monotonic() - started,
    }
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    if not arguments.no_docs and not quick:
        from benchmarks.report import render, splice

        DOCUMENT.write_text(splice(DOCUMENT.read_text() if DOCUMENT.exists() else "", render(results)))
        _log(f"bench: wrote {DOCUMENT.relative_to(ROOT)} and {RESULTS.relative_to(ROOT)}")
    _log(f"bench: done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
