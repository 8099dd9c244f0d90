"""The built image as Fargate runs it: its entrypoint, users, paths and compiled code (no
agent-server boot). The container runs with `buildah run --isolation chroot`."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from devstack import sandbox_image

VENV_PYTHON = "/opt/openhands-sandbox/venv/bin/python"
ENTRYPOINT = [VENV_PYTHON, "-I", "-u", "-m", "openhands_sandbox.bootstrap"]
AGENT_UID, SETUP_UID = 1000, 1001


def run_python(container: sandbox_image.SandboxContainer, code: str, *, user: str | None = None) -> Any:
    """Run `code` with the image's Python (isolated) in the container; it prints one JSON value."""
    result = container.run([VENV_PYTHON, "-I", "-c", textwrap.dedent(code)], user=user)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_image_runs_its_bootstrap_as_root_with_the_two_users_and_compiled_code(
    image: str, container: sandbox_image.SandboxContainer
) -> None:
    config = sandbox_image.image_config(image)
    assert config["Entrypoint"] == ENTRYPOINT
    assert config.get("User", "") in {"", "root", "0"}
    assert config["WorkingDir"] == "/"
    environment = dict(item.split("=", 1) for item in config["Env"])
    assert environment["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"  # no cost-map fetch at boot
    assert environment["OPENHANDS_SUPPRESS_BANNER"] == "1"
    assert environment["SANDBOX_AGENT_UID"] == str(AGENT_UID)
    assert environment["SANDBOX_SETUP_UID"] == str(SETUP_UID)
    assert environment["WORKSPACE_ROOT"] == "/workspace"
    assert "PYTHONPATH" not in environment

    facts = run_python(
        container,
        """
        import importlib.util, json, os, pwd, sys, sysconfig
        import openhands_sandbox.bootstrap, openhands.agent_server
        site = sysconfig.get_path("purelib")
        sources = [os.path.join(d, f) for d, _, fs in os.walk(site) for f in fs if f.endswith(".py")]
        def compiles(path):
            try:
                compile(open(path, "rb").read(), path, "exec")
                return True
            except SyntaxError:  # Python 2 leftovers some packages ship (never imported)
                return False
        missing = [p for p in sources if not os.path.exists(importlib.util.cache_from_source(p))]
        uncompiled = [p for p in missing if compiles(p)]
        workspace = os.stat("/workspace")
        print(json.dumps({
            "euid": os.geteuid(),
            "users": {name: list(pwd.getpwnam(name)[2:4]) for name in ("openhands", "oh-setup")},
            "workspace": [workspace.st_uid, workspace.st_gid, oct(workspace.st_mode & 0o7777)],
            "bootstrap": openhands_sandbox.bootstrap.__file__,
            "agent_server": openhands.agent_server.__file__,
            "site": site,
            "sources": len(sources),
            "uncompiled": uncompiled[:5],
            "path": sys.path,
        }))
        """,
    )
    assert facts["euid"] == 0
    assert facts["users"] == {"openhands": [AGENT_UID, AGENT_UID], "oh-setup": [SETUP_UID, SETUP_UID]}
    assert facts["workspace"] == [0, 0, "0o755"]
    # The package is installed in the image's environment, not found through a path variable.
    assert facts["bootstrap"] == f"{facts['site']}/openhands_sandbox/bootstrap.py"
    assert facts["agent_server"].startswith(facts["site"])
    assert "" not in facts["path"] and "/workspace" not in facts["path"]
    assert facts["sources"] > 1000 and facts["uncompiled"] == []

    # Neither unprivileged user can change the code that runs as root or as the agent.
    for uid in (AGENT_UID, SETUP_UID):
        writable = run_python(
            container,
            """
            import json, os, sysconfig
            paths = [sysconfig.get_path("purelib"), "/opt/openhands-sandbox/venv/bin", "/workspace", "/opt"]
            print(json.dumps({"uid": os.getuid(), "writable": [p for p in paths if os.access(p, os.W_OK)]}))
            """,
            user=f"{uid}:{uid}",
        )
        assert writable == {"uid": uid, "writable": []}


BOOT_AUDIT = """
import json, os, runpy, socket, sys, sysconfig, threading, time

port = int(sys.argv[1])
site = sysconfig.get_path("purelib") + "/"
compiled, reached = [], []
LOCAL = {"127.0.0.1", "::1", "localhost", None}


AST_ONLY = {"anyio._lazyimport"}  # parses its own package's source for its lazy names: no bytecode


def audit(event, args):
    # An import from source compiles the file's bytes (beartype's hook: its rewritten tree); a str
    # is someone parsing a source it read (inspect, ast.parse), which no pyc saves.
    source, filename = (args + (None, None))[:2] if event == "compile" else (None, None)
    if isinstance(filename, str) and filename.startswith(site) and not isinstance(source, str):
        caller = sys._getframe(1).f_globals.get("__name__")
        if caller not in AST_ONLY:
            compiled.append(f"{filename[len(site):]} (compiled by {caller})")
    elif event == "socket.connect" and isinstance(args[1], tuple) and args[1][0] not in LOCAL:
        reached.append(repr(args[1]))
    elif event == "socket.getaddrinfo" and args[0] not in LOCAL:
        reached.append(repr(args[:2]))


def report_once_listening():
    started = time.monotonic()
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    print(json.dumps({"boot_seconds": time.monotonic() - started, "compiled": compiled, "reached": reached}))
    sys.stdout.flush()
    os._exit(0)


sys.addaudithook(audit)
threading.Thread(target=report_once_listening, daemon=True).start()
sys.argv = ["openhands.agent_server", "--host", "127.0.0.1", "--port", str(port)]
runpy.run_module("openhands.agent_server", run_name="__main__", alter_sys=True)
"""


def test_the_agent_server_boots_from_the_images_bytecode_and_reaches_no_other_host(
    container: sandbox_image.SandboxContainer,
) -> None:
    """As the agent user, with the image's environment: every module the boot imports loads from
    a pyc that is still valid (none is compiled from source, which no one could write back), and
    nothing resolves or connects to a host other than loopback (litellm's price list stays local)."""
    from sandbox_harness import free_port

    port = free_port()
    result = container.run(
        [
            "/usr/bin/env",
            "--chdir=/tmp",
            "HOME=/tmp",
            "SESSION_API_KEY=boot-audit",
            VENV_PYTHON,
            "-I",
            "-c",
            BOOT_AUDIT,
            str(port),
        ],
        user=f"{AGENT_UID}:{AGENT_UID}",
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["compiled"] == [], f"compiled at boot: {len(facts['compiled'])}, e.g. {facts['compiled'][:5]}"
    assert facts["reached"] == [], facts["reached"]
