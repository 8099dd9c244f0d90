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
