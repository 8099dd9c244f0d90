"""The agent-server's bare boot, the floor of a cold start, three ways in one run (interleaved, so
the machine's load weighs on each alike):

- *host*: `.venv-agent/bin/python -I -u -m openhands.agent_server` as benchmarks/start.py measures it
  (the venv's pycs valid, as pip wrote them);
- *host, no bytecode*: the same with `-B -X pycache_prefix=<an empty directory>`: every module is
  compiled from source, as a venv without valid pycs that nobody may write to would boot;
- *image*: the built sandbox image (`make sandbox-image`), `buildah run --isolation chroot` as the
  agent user with the image's environment (skipped when the image of these sources is not built
  or buildah cannot run); the launch through buildah is part of the figure.

Each figure is spawn to the first `/health` that answers 200 (polled every 0.1 s), with the
1-minute load average when it started.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import median
from benchmarks.start import bare_boot_seconds, load_average

IMAGE_PYTHON = "/opt/openhands-sandbox/venv/bin/python"
AGENT_UID = 1000


def _image_boot(work: Path, container: str, marker: str) -> float:
    from devstack.fargate import kill_marked_processes

    launcher = ["buildah", "run", "--isolation", "chroot", "--user", f"{AGENT_UID}:{AGENT_UID}"]
    launcher += ["--env", f"DEVSTACK_SANDBOX={marker}", container, "--"]
    launcher += ["/usr/bin/env", "--chdir=/tmp", "HOME=/tmp", f"SESSION_API_KEY={secrets.token_hex(8)}"]
    try:
        return bare_boot_seconds(work, launcher=launcher, python=IMAGE_PYTHON)
    finally:
        kill_marked_processes(marker)  # the container's process outlives buildah's process group


def _image_container() -> tuple[str | None, str]:
    """A working container of the current sources' image, or None and why not."""
    from devstack import sandbox_image

    if os.geteuid() != 0 or not sandbox_image.buildah_available():
        return None, "buildah needs root and must be installed (make sandbox-image)"
    reference = sandbox_image.image_reference()
    if not sandbox_image.image_exists(reference):
        return None, f"{reference} is not built (make sandbox-image)"
    name = f"bench-boot-{secrets.token_hex(4)}"
    sandbox_image.SandboxContainer.create(reference, name)
    return name, reference


def run(samples: int = 3, log: Any = print) -> dict[str, Any]:
    from devstack import sandbox_image

    work = Path(tempfile.mkdtemp(prefix="bench-boot-"))
    container, image = _image_container()
    marker = f"bench-boot-{secrets.token_hex(6)}"

    def no_bytecode(work: Path) -> float:
        empty = Path(tempfile.mkdtemp(prefix="no-pyc-", dir=work))
        return bare_boot_seconds(work, options=["-B", "-X", f"pycache_prefix={empty}"])

    ways: dict[str, Callable[[Path], float]] = {"host": bare_boot_seconds, "host_no_bytecode": no_bytecode}
    if container is not None:
        ways["image"] = lambda work: _image_boot(work, container, marker)
    figures: dict[str, dict[str, list[float]]] = {name: {"samples": [], "load_average_1m": []} for name in ways}
    try:
        for index in range(samples):
            for name, boot in ways.items():
                load = load_average()
                seconds = boot(work)
                figures[name]["samples"].append(round(seconds, 2))
                figures[name]["load_average_1m"].append(round(load, 2))
                log(f"  boot: {name} {index + 1}/{samples} {seconds:.1f} s (load {load:.1f})")
    finally:
        if container is not None:
            sandbox_image.SandboxContainer(container, image).remove()
    result: dict[str, Any] = {name: {**values, "p50_s": median(values["samples"])} for name, values in figures.items()}
    host = result["host"]["p50_s"]
    result["no_bytecode_over_host_ratio"] = result["host_no_bytecode"]["p50_s"] / host
    if container is None:
        result["image"] = {"skipped": image}
    else:
        result["image_over_host_ratio"] = result["image"]["p50_s"] / host
        result["image_reference"] = image
    return result
