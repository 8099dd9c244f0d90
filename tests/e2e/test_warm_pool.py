"""A warm start end to end: `python -m devstack --pool 1` boots one pool sandbox (the real
bootstrap and agent-server) that waits holding nothing of any conversation; a create claims it
and reaches RUNNING on that same agent-server, with the workspace, setup script and hook of a cold
start; the pool then refills. One agent-server boot for the module (plus the refill it starts)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from conversation_service.logic.start_hops import SERVICE_HOPS

from devstack.fargate import IDLE_POOL_NICENESS
from tests.e2e.local_stack import (
    AGENT_PYTHON,
    RunningStack,
    agent_server_pid,
    environment_variable,
    free_port,
)
from tests.e2e.test_local_stack import git, sandbox_of
from tests.support.proc_stat import autogroup_niceness, thread_niceness
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
BOOT_TIMEOUT = 90.0
IDLE_TIMEOUT = 240.0  # an agent-server boot: 13 s idle, 40 s on a busy machine
RUNNING_TIMEOUT = 60.0


def pool_items(stack: RunningStack, endpoint: str) -> list[dict[str, Any]]:
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    from conversation_service.dal.aws import from_item

    items = session.client("dynamodb", endpoint_url=endpoint).scan(TableName="local-SandboxPoolTable")["Items"]
    return [from_item(item) for item in items]


def test_a_create_claims_the_idle_sandbox_and_reaches_running_on_its_agent_server(tmp_path: Path) -> None:
    if not AGENT_PYTHON.exists():
        pytest.skip(f"{AGENT_PYTHON} is missing: the sandboxes need openhands-agent-server")
    stack = RunningStack.start(tmp_path / "state", free_port(), pool=1)
    try:
        base_url = stack.wait_for_line(r"devstack ready: (http://127\.0\.0\.1:\d+)/api", BOOT_TIMEOUT).group(1)
        endpoint = stack.wait_for_line(r"AWS \(moto\)\s+(http://127\.0\.0\.1:\d+)", 1).group(1)
        (idle,) = wait_until(
            lambda: [i for i in pool_items(stack, endpoint) if i["pool_status"] == "IDLE"] or None,
            IDLE_TIMEOUT,
            "the pool sandbox to boot and report idle",
        )
        sandbox = sandbox_of(stack.state_dir, idle["sandbox_id"])
        idle_pid = agent_server_pid(int(sandbox["agent_server_port"]))
        assert idle_pid is not None, "the idle sandbox has no agent-server"
        # Idle, it holds nothing of a conversation, and its agent-server not even the pool credential.
        assert environment_variable(idle_pid, "SANDBOX_POOL_TOKEN") is None
        assert environment_variable(idle_pid, "SANDBOX_POOL_TOKEN_CIPHERTEXT") is None
        assert environment_variable(idle_pid, "SANDBOX_TOKEN") is None
        assert not (Path(sandbox["workspace_root"]) / "repo").exists()
        # Its warm-up (warm.warm_up_conversation_routes, warm.warm_up_a_conversation) left no
        # conversation in the agent-server, and no directory of the warm-up conversation's.
        agent_tmp = list((Path(sandbox["log"]).parent / "runtime").glob("*/agent-tmp"))
        assert len(agent_tmp) == 1, agent_tmp
        assert "agent-server warmed up" in Path(sandbox["log"]).read_text()
        assert [entry.name for entry in agent_tmp[0].iterdir() if entry.name != "tmux"] == []
        idle_search = requests.get(
            f"http://127.0.0.1:{sandbox['agent_server_port']}/api/conversations/search",
            headers={"X-Session-API-Key": environment_variable(idle_pid, "SESSION_API_KEY") or ""},
            timeout=10,
        )
        assert idle_search.status_code == 200 and idle_search.json()["items"] == [], idle_search.text
        # Idle, it boots and waits on the CPU nobody else wants (as root: SANDBOX_IDLE_NICENESS).
        separated = os.geteuid() == 0
        if separated:
            assert thread_niceness(idle_pid) == {IDLE_POOL_NICENESS}, thread_niceness(idle_pid)
            # And its session's autogroup: between sessions the kernel shares the CPU by autogroup.
            assert autogroup_niceness(idle_pid) in (IDLE_POOL_NICENESS, None)
            assert autogroup_niceness(int(sandbox["pid"])) in (IDLE_POOL_NICENESS, None)

        started = time.monotonic()
        created = requests.post(
            f"{base_url}/api/conversations",
            json={
                "repository": "https://github.com/user/repo.git",
                "selected_branch": "develop",
                "initial_user_msg": "hi",
            },
            timeout=30,
        ).json()
        conversation_id = created["conversation_id"]
        view = wait_until(
            lambda: (
                (v := requests.get(f"{base_url}/api/conversations/{conversation_id}", timeout=10).json())[
                    "conversation_status"
                ]
                in ("RUNNING", "ERROR")
                and v
            ),
            RUNNING_TIMEOUT,
            "RUNNING",
        )
        seconds = time.monotonic() - started
        assert view["conversation_status"] == "RUNNING" and view["start"] == "warm", view
        print(f"warm start: POST -> RUNNING in {seconds:.1f} s")
        # Every hop recorded: the service's in order, then the real bootstrap's own steps of a warm start.
        hops = [(hop["measured_by"], hop["hop"]) for hop in view["start_hops"]]
        service = [("service", name) for name in SERVICE_HOPS]
        sandbox_steps = ["assignment_to_start", "phase_reports", "context_fetch", "clone", "setup_script"]
        sandbox_steps += ["git_hooks", "head_commit", "agent_server", "conversation_create"]
        assert hops == service + [("sandbox", step) for step in sandbox_steps], hops
        print("  hops (ms): " + ", ".join(f"{hop['hop']} {hop['milliseconds']}" for hop in view["start_hops"]))

        # The same agent-server, booted while idle, serves the conversation in the claimed sandbox.
        assert int(view["agent_server_url"].rsplit(":", 1)[1]) == int(sandbox["agent_server_port"])
        assert agent_server_pid(int(sandbox["agent_server_port"])) == idle_pid
        # Assigned, every thread of it (and of its bootstrap) is back at the stack's own priority.
        if separated:
            assert thread_niceness(idle_pid) == {os.getpriority(os.PRIO_PROCESS, 0)}, thread_niceness(idle_pid)
            bootstrap = int(sandbox["pid"])
            assert thread_niceness(bootstrap) == {os.getpriority(os.PRIO_PROCESS, 0)}, thread_niceness(bootstrap)
            assert autogroup_niceness(idle_pid) in (0, None) and autogroup_niceness(bootstrap) in (0, None)
        workspace = Path(sandbox["workspace_root"]) / "repo"
        assert git(workspace, "rev-parse", "HEAD") == view["commit"]
        assert (workspace / ".openhands_setup_done").exists(), "the setup script did not run"
        assert (workspace / ".git" / "hooks" / "pre-commit").exists()
        session_key = environment_variable(idle_pid, "SESSION_API_KEY")
        assert session_key
        answer = requests.get(
            f"{view['agent_server_url']}/api/conversations/{view['agent_conversation_id']}",
            headers={"X-Session-API-Key": session_key},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert Path(answer.json()["workspace"]["working_dir"]).resolve() == workspace.resolve()
        # The agent-server holds this conversation only, and nothing of the idle sandbox's warm-up
        # conversation reached the service: its first events are the conversation's own.
        search = requests.get(
            f"{view['agent_server_url']}/api/conversations/search",
            headers={"X-Session-API-Key": session_key},
            timeout=10,
        ).json()
        assert [item["id"] for item in search["items"]] == [answer.json()["id"]], search
        events = wait_until(
            lambda: (
                found := requests.get(f"{base_url}/api/conversations/{conversation_id}/events", timeout=10).json()[
                    "results"
                ]
            )
            and any('"hi"' in json.dumps(event) for event in found)
            and found,
            RUNNING_TIMEOUT,
            "the conversation's first events",
        )
        assert not any("warm-up" in json.dumps(event) for event in events), events

        # Claimed once, never idle again, and the pool refills.
        items = {i["sandbox_id"]: i for i in pool_items(stack, endpoint)}
        assert items[idle["sandbox_id"]]["pool_status"] == "CLAIMED"
        assert items[idle["sandbox_id"]]["conversation_id"] == conversation_id
        wait_until(
            lambda: any(i["sandbox_id"] != idle["sandbox_id"] for i in pool_items(stack, endpoint)),
            30,
            "a replacement pool sandbox",
        )
        assert stack.interrupt(timeout=60) == 0
    finally:
        stack.kill_everything()
