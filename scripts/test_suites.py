"""Runs the test suites, each in a pytest process of its own, a few at a time (`make test`).

python scripts/test_suites.py [--jobs N] [--one-at-a-time "e2e sandbox"] SUITE...

The suites start in the order given (longest first balances the workers); up to `--jobs` run at
once, but never two of `--one-at-a-time` together (the suites that boot agent-servers: a boot is
13 s of CPU, and their timeouts are the ones a second boot would squeeze). Each suite's output goes
to .test-logs/<suite>.log and is printed whole when the suite ends, so suites never interleave.
pytest's exit 5 (it collected nothing) is said loudly and not counted as a failure. The summary
names every suite with its result and seconds; the exit status is 1 if any suite failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".test-logs"
NO_TESTS_COLLECTED = 5


@dataclass
class Suite:
    name: str
    exclusive: bool
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    started: float = 0.0
    seconds: float = 0.0
    returncode: int | None = None
    collected_nothing: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return LOGS / f"{self.name}.log"

    def start(self, pytest: Path) -> None:
        LOGS.mkdir(exist_ok=True)
        self.log = self.log_path.open("wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(pytest), "-q", f"tests/{self.name}"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def poll(self) -> bool:
        """True once the process ended (its result recorded)."""
        assert self.process is not None and self.log is not None
        returncode = self.process.poll()
        if returncode is None:
            return False
        self.seconds = time.monotonic() - self.started
        self.log.close()
        if returncode == NO_TESTS_COLLECTED:
            self.notes.append(f"pytest collected no tests in tests/{self.name}")
            self.collected_nothing = True
            returncode = 0
        self.returncode = returncode
        return True

    @property
    def result(self) -> str:
        if self.returncode is None:
            return "not run"
        if self.returncode != 0:
            return f"FAILED (exit {self.returncode})"
        return "passed (no tests)" if self.collected_nothing else "passed"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def report(suite: Suite) -> None:
    out = sys.stdout
    out.write(f"== tests/{suite.name}: {suite.result} in {suite.seconds:.0f} s\n")
    out.write(suite.log_path.read_text(errors="replace"))
    out.flush()
    for note in suite.notes:
        print(note, file=sys.stderr, flush=True)


def run(suites: list[Suite], jobs: int, pytest: Path) -> list[Suite]:
    pending = list(suites)
    running: list[Suite] = []
    try:
        while pending or running:
            for suite in [suite for suite in running if suite.poll()]:
                running.remove(suite)
                report(suite)
            while len(running) < jobs:
                busy = any(suite.exclusive for suite in running)
                ready = next((suite for suite in pending if not (suite.exclusive and busy)), None)
                if ready is None:
                    break
                pending.remove(ready)
                print(f"-- tests/{ready.name} started (load average {load_average()})", flush=True)
                ready.start(pytest)
                running.append(ready)
            time.sleep(0.2)
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reached every pytest too (one process group): let them clean up.
        for suite in running:
            assert suite.process is not None
            try:
                suite.process.wait(60)
            except subprocess.TimeoutExpired:
                suite.process.kill()
        raise
    return suites


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="+", help="directories under tests/, in the order to start them")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("TEST_JOBS", "2")))
    parser.add_argument("--one-at-a-time", default="", help="suites never run together (space-separated)")
    args = parser.parse_args(argv)
    exclusive = set(args.one_at_a_time.split())
    suites = [Suite(name, name in exclusive) for name in args.suites]
    pytest = Path(sys.executable).parent / "pytest"
    began = time.monotonic()
    print(f"-- {len(suites)} suites, {args.jobs} at a time (load average {load_average()})", flush=True)
    run(suites, max(1, args.jobs), pytest)
    print(f"\n== {len(suites)} suites in {time.monotonic() - began:.0f} s (load average {load_average()})")
    for suite in suites:
        print(f"   {suite.name:<14} {suite.result:<22} {suite.seconds:6.0f} s")
    failed = [suite.name for suite in suites if suite.returncode != 0]
    if failed:
        print(f"FAILED suites: {' '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
