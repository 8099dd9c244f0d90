"""`python -m devstack` (`make dev`): the whole service on 127.0.0.1 until Ctrl-C.

LLM_MODEL, LLM_API_KEY and LLM_BASE_URL (environment) become the local user's settings; placeholders
when unset (conversations then start, but the agent cannot talk to an LLM). For a model that answers
with scripted tool calls: `python -m devstack.scripted_model` and the LLM_* values it prints.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from devstack.console import say
from devstack.sandbox_image import ImageError, ensure_image, image_exists
from devstack.stack import LocalStack, StackOptions, StateDirectoryNotOurs
from devstack.template_resources import ROOT

BUILT_IMAGE = "built"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000, help="API port (default 3000)")
    parser.add_argument("--moto-port", type=int, default=0, help="moto (AWS) port; 0 picks a free one")
    parser.add_argument("--git-port", type=int, default=0, help="git server port; 0 picks a free one")
    parser.add_argument(
        "--state-dir", type=Path, default=ROOT / ".devstack", help="wiped at start (default .devstack/)"
    )
    parser.add_argument(
        "--sandbox-api-faults",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="fail this share (0-1) of the sandboxes' channel calls with 502, to watch their retries (default 0)",
    )
    parser.add_argument(
        "--sandbox-image",
        nargs="?",
        const=BUILT_IMAGE,
        default=None,
        metavar="IMAGE",
        help="run sandboxes from the container image (buildah, chroot isolation; needs root) instead of as local "
        "processes; without IMAGE, the image of the current sandbox/ sources, built first if missing "
        "(make sandbox-image)",
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=2,
        metavar="N",
        help="warm sandboxes kept booted and idle (default 2; 0 turns the pool off: every start is cold)",
    )
    return parser.parse_args(argv)


def resolve_sandbox_image(requested: str | None) -> str | None:
    """The image reference to run sandboxes from (built if it is ours and missing), or None."""
    if requested is None:
        return None
    if os.geteuid() != 0:
        raise ImageError("--sandbox-image needs root (buildah's storage and chroot isolation)")
    if requested == BUILT_IMAGE:
        return ensure_image()
    if not image_exists(requested):
        raise ImageError(f"{requested} is not in buildah's storage")
    return requested


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        sandbox_image = resolve_sandbox_image(arguments.sandbox_image)
    except ImageError as error:
        print(f"devstack: {error}", file=sys.stderr)
        return 2
    options = StackOptions(
        port=arguments.port,
        moto_port=arguments.moto_port,
        git_port=arguments.git_port,
        state_dir=arguments.state_dir,
        pool_target_idle=max(arguments.pool, 0),
        llm_model=os.environ.get("LLM_MODEL") or None,
        # Read once, then out of the environment: it reaches sandboxes only through the sealed settings.
        llm_api_key=os.environ.pop("LLM_API_KEY", None) or None,
        llm_base_url=os.environ.get("LLM_BASE_URL") or None,
        sandbox_api_faults=arguments.sandbox_api_faults,
        sandbox_image=sandbox_image,
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            say("still stopping: sandboxes get up to 20 s to end")
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    stack = LocalStack(options)
    try:
        stack.start()
    except StateDirectoryNotOurs as error:
        print(f"devstack: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"devstack: could not start: {error}", file=sys.stderr)
        stack.stop()
        return 1
    except BaseException:
        stack.stop()
        raise
    for line in stack.describe():
        print(line)
    print(f"devstack ready: {stack.api_url}", flush=True)
    while not stop.wait(0.5):
        pass
    say("devstack stopping: sandboxes first, then the servers")
    stack.stop()
    say("devstack stopped")
    return 0


def exit_now(code: int) -> None:
    """Exit without the interpreter's final garbage collection: with moto's backends loaded it
    takes seconds, and everything that needs stopping has stopped."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
