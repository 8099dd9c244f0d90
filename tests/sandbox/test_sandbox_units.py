"""Pieces of the bootstrap that are cheaper to check on their own."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from openhands_sandbox.agent_server import (
    AgentServer,
    AgentServerLaunch,
    advertised_url,
    agent_conversation_uuid,
    listening_sockets,
    start_conversation_request,
)
from openhands_sandbox.context import ContextError, ConversationContext
from openhands_sandbox.control_plane import ControlPlaneClient, ControlPlaneRejected, Phase
from openhands_sandbox.logs import Redactor
from openhands_sandbox.processes import agent_environment, clean_environment
from openhands_sandbox.users import RunAs
from openhands_sandbox.warm import set_autogroup_niceness, take_back_cpu, yield_cpu_while_idle
from sandbox_harness import Secrets, free_port, make_context, wait_for_port

from tests.support.proc_stat import autogroup_niceness, thread_niceness
from tests.support.waiting import wait_until


@contextmanager
def serving(statuses: list[int], body: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server answering each request with the next status (the last one repeats)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer()

        def _answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            status = statuses[min(len(seen), len(statuses)) - 1]
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_redactor_masks_every_registered_secret_and_ignores_tiny_ones() -> None:
    redactor = Redactor(["abc", "s3cr3t-value", None])
    redactor.add(["s3cr3t-value-longer"])
    assert redactor.redact("x s3cr3t-value-longer y s3cr3t-value abc") == "x *** y *** abc"
    assert redactor.redact_value({"a": ["s3cr3t-value", 3]}) == {"a": ["***", 3]}


def test_clean_environment_drops_credentials_and_any_value_holding_a_secret() -> None:
    base = {
        "PATH": "/usr/bin",
        "SANDBOX_TOKEN": "tok",
        "SANDBOX_API_URL": "http://x",
        "SESSION_API_KEY": "k",
        "CARRIER": "prefix-the-llm-key-suffix",
        "HOME": "/home/u",
        "SANDBOX_TOKEN_CIPHERTEXT": "AQICAH...",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/abc",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/abc",
        "ECS_CONTAINER_METADATA_URI": "http://169.254.170.2/v3/abc",
        "PYTHONPATH": "/opt/openhands-sandbox",
    }
    assert clean_environment(["the-llm-key"], base) == {"PATH": "/usr/bin", "HOME": "/home/u"}


def test_the_agent_gets_the_locale_the_way_out_and_what_the_task_lists_never_the_sandbox_wiring() -> None:
    base = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HTTPS_PROXY": "http://proxy:3128",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "WORKSPACE_ROOT": "/workspace",
        "AGENT_SERVER_PORT": "8000",
        "SANDBOX_AGENT_UID": "1000",
        "PYTHONDONTWRITEBYTECODE": "1",
        "ECS_AGENT_URI": "http://169.254.170.2/api/abc",
        "DEVSTACK_SANDBOX": "run:task",
        "SANDBOX_AGENT_ENVIRONMENT": "DEVSTACK_SANDBOX, SANDBOX_TOKEN,CARRIER",
        "SANDBOX_TOKEN": "tok",
        "CARRIER": "holds-the-llm-key",
    }
    assert agent_environment(["the-llm-key"], base) == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HTTPS_PROXY": "http://proxy:3128",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DEVSTACK_SANDBOX": "run:task",
    }


def test_an_idle_pool_sandbox_yields_the_cpu_and_takes_it_back_for_its_whole_groups() -> None:
    assert yield_cpu_while_idle("") is None
    assert yield_cpu_while_idle("not a number") is None
    assert yield_cpu_while_idle(str(os.getpriority(os.PRIO_PROCESS, 0))) is None  # nothing to lower
    if os.geteuid() != 0:
        pytest.skip("taking the CPU back (lowering niceness) takes root")
    started_at = os.getpriority(os.PRIO_PROCESS, 0)
    # A stand-in for the agent-server: a session and process group of its own with a second
    # thread, at 19, its autogroup at 19 (as yield_cpu_while_idle and the pool boot leave them).
    child = subprocess.Popen(
        ["python3", "-c", "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start()"],
        start_new_session=True,
        preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 19),
    )
    try:
        wait_until(lambda: len(os.listdir(f"/proc/{child.pid}/task")) >= 2, 10, "the child's second thread", 0.05)
        set_autogroup_niceness(child.pid, 19)
        assert autogroup_niceness(child.pid) in (19, None)
        take_back_cpu(started_at, child.pid)
        assert thread_niceness(child.pid) == {started_at}, thread_niceness(child.pid)
        assert autogroup_niceness(child.pid) in (started_at, None)
    finally:
        child.kill()
        child.wait()


def test_mcp_header_and_environment_values_are_secrets_and_get_masked(sandbox_secrets: Secrets) -> None:
    mcp_key = "mcp_" + "k" * 24
    context_json = make_context("ab" * 16, sandbox_secrets, repository=None)
    context_json["mcp_config"] = {
        "search": {
            "url": "https://mcp.example.com/mcp",
            "transport": "http",
            "headers": {"Authorization": f"Bearer {mcp_key}"},
        },
        "tools": {"command": "uvx", "args": ["mcp-tools"], "env": {"TOOLS_TOKEN": "tools-" + "t" * 20}},
        "keyed": {"url": "https://other.example.com/sse", "transport": "sse", "api_key": "key-" + "a" * 20},
    }
    context = ConversationContext.from_json(context_json)
    found = context.secrets()
    assert {mcp_key, f"Bearer {mcp_key}", "tools-" + "t" * 20, "key-" + "a" * 20} <= set(found)
    redactor = Redactor(found)
    assert redactor.redact(f"connecting with {mcp_key} and tools-{'t' * 20}") == "connecting with *** and ***"


def test_control_plane_calls_are_retried_on_5xx_but_not_on_409() -> None:
    client_redactor = Redactor()
    with serving([503, 200], {"status": "ok"}) as (url, seen):
        client = ControlPlaneClient(url, "token", client_redactor, sleep=lambda _s: None)
        client.send_phase(Phase.RUNTIME_STARTED)
    assert seen == ["POST /v1/events", "POST /v1/events"]

    with serving([409], {"error": "conflict"}) as (url, seen):
        client = ControlPlaneClient(url, "token", client_redactor, sleep=lambda _s: None)
        with pytest.raises(ControlPlaneRejected) as rejected:
            client.send_phase(Phase.RUNTIME_STARTED)
    assert rejected.value.status == 409
    assert seen == ["POST /v1/events"]


def test_the_advertised_url_comes_from_ecs_task_metadata_when_bound_to_all_interfaces() -> None:
    metadata = {"Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.1.5"]}]}
    with serving([200], metadata) as (metadata_uri, _):
        environ = {"ECS_CONTAINER_METADATA_URI_V4": metadata_uri}
        assert advertised_url("0.0.0.0", 8000, None, environ) == "http://10.0.1.5:8000"
        assert advertised_url("0.0.0.0", 8000, "https://sbx.example/", environ) == "https://sbx.example"
    assert advertised_url("127.0.0.1", 8123, None, {}) == "http://127.0.0.1:8123"


@pytest.mark.parametrize(
    ("confirmation_mode", "analyzer", "policy", "analyzer_kind"),
    [
        (False, None, "NeverConfirm", None),
        (True, None, "AlwaysConfirm", None),
        (True, "llm", "ConfirmRisky", "LLMSecurityAnalyzer"),
    ],
)
def test_confirmation_settings_map_to_the_agent_server_policies(
    sandbox_secrets: Secrets,
    confirmation_mode: bool,
    analyzer: str | None,
    policy: str,
    analyzer_kind: str | None,
) -> None:
    raw = make_context("ab" * 16, sandbox_secrets, repository=None)
    raw["agent"].update({"confirmation_mode": confirmation_mode, "security_analyzer": analyzer})
    context = ConversationContext.from_json(raw)
    body = start_conversation_request(
        context, Path("/workspace/project"), agent_conversation_uuid(context.conversation_id)
    )
    assert body["confirmation_policy"] == {"kind": policy}
    assert body.get("security_analyzer") == (analyzer_kind and {"kind": analyzer_kind})
    assert body["agent_settings"]["llm"]["api_key"] == sandbox_secrets.llm_key
    assert body["conversation_id"] == "abababab-abab-abab-abab-abababababab"


@pytest.mark.parametrize(
    ("repository_patch", "problem"),
    [
        ({"name": "../escape"}, "repository.name"),
        ({"name": ".."}, "repository.name"),
        ({"commit": "main"}, "repository.commit"),
        ({"clone_url": None}, "repository.clone_url"),
    ],
)
def test_a_malformed_context_is_refused(
    sandbox_secrets: Secrets, repository_patch: dict[str, Any], problem: str
) -> None:
    repository = {
        "clone_url": "https://example.com/o/r.git",
        "name": "r",
        "branch": "main",
        "commit": "a" * 40,
        "username": None,
        "password": None,
    }
    raw = make_context("ab" * 16, sandbox_secrets, repository={**repository, **repository_patch})
    with pytest.raises(ContextError, match=problem):
        ConversationContext.from_json(raw)


def test_context_reprs_hide_the_secrets(sandbox_secrets: Secrets) -> None:
    repository = {
        "clone_url": "https://example.com/o/r.git",
        "name": "r",
        "branch": "main",
        "commit": "a" * 40,
        "username": "x-access-token",
        "password": sandbox_secrets.git_password,
    }
    context = ConversationContext.from_json(make_context("ab" * 16, sandbox_secrets, repository=repository))
    assert sorted(context.secrets()) == sorted(
        [sandbox_secrets.git_password, sandbox_secrets.llm_key, sandbox_secrets.session_key]
    )
    for secret in context.secrets():
        assert secret not in repr(context)


LISTEN = (
    "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(60)"
)
NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="listening as another uid needs root")
def test_a_separated_agent_server_owns_its_port_only_through_a_socket_of_the_agent_user(tmp_path: Path) -> None:
    """In a container root cannot read the agent user's fd table (no CAP_SYS_PTRACE, as on
    Fargate): the owner of the listening socket, from /proc/net, decides."""
    port = free_port()
    listener = subprocess.Popen(
        ["/usr/bin/python3", "-c", LISTEN, str(port)], user=NOBODY, group=NOBODY, extra_groups=[], cwd="/"
    )
    try:
        wait_for_port(port)
        assert set(listening_sockets(port).values()) == {NOBODY}

        def server_run_as(uid: int) -> AgentServer:
            launch = AgentServerLaunch(
                python="/usr/bin/python3",
                host="127.0.0.1",
                port=port,
                session_api_key="k",
                working_dir=tmp_path,
                home_dir=tmp_path,
                state_dir=tmp_path,
                log_path=tmp_path / "log",
                config_path=tmp_path / "config.json",
                tmux_dir=tmp_path,
                env={},
                run_as=RunAs(uid, uid),
            )
            return AgentServer(listener, launch, launch.log_path)

        assert server_run_as(NOBODY).owns_its_port()
        assert not server_run_as(NOBODY - 1).owns_its_port()  # someone else's socket: never
    finally:
        listener.kill()
        listener.wait()
    assert not server_run_as(NOBODY).owns_its_port()  # nothing listens any more


def test_the_steps_a_sandbox_times_are_the_ones_the_service_accepts_in_the_same_order() -> None:
    # Two deployables, one contract: the bootstrap's names (timings.py) and the service's (models).
    from typing import get_args

    from conversation_service.models.context import SandboxStep
    from openhands_sandbox.timings import STEPS, StepTimer

    assert get_args(SandboxStep) == STEPS
    timer = StepTimer(began=0.0)
    timer.add("clone", 0.25)
    timer.add("phase_reports", 0.1)
    timer.add("phase_reports", 0.2)
    assert list(timer.report().items()) == [("phase_reports", 0.3), ("clone", 0.25)]
    with pytest.raises(ValueError, match="unknown step"):
        timer.add("not_a_step", 1.0)


class _SlowPhases:
    """A control plane client whose phase calls block until released (and may be rejected)."""

    def __init__(self, reject: set[str] | None = None) -> None:
        self.sent: list[str] = []
        self.release = threading.Event()
        self.reject = reject or set()

    def send_phase(self, phase: Phase) -> None:
        self.release.wait(10)
        if phase.value in self.reject:
            raise ControlPlaneRejected(409)
        self.sent.append(phase.value)


def test_phase_reports_go_out_in_order_without_holding_up_the_start() -> None:
    from openhands_sandbox.lifecycle import StopController
    from openhands_sandbox.phase_reporter import PhaseReporter

    client = _SlowPhases()
    reporter = PhaseReporter(client, StopController())  # type: ignore[arg-type]
    for phase in Phase:
        reporter.report(phase)  # returns while the first call is still waiting
    assert client.sent == []
    with pytest.raises(TimeoutError):
        reporter.flush(timeout_seconds=0.2)
    client.release.set()
    reporter.flush(timeout_seconds=10)
    assert client.sent == [phase.value for phase in Phase]


def test_a_rejected_phase_report_stops_the_sandbox_and_is_raised_at_the_next_phase() -> None:
    from openhands_sandbox.errors import StopReason
    from openhands_sandbox.lifecycle import StopController
    from openhands_sandbox.phase_reporter import PhaseReporter

    client = _SlowPhases(reject={Phase.SETTING_UP_WORKSPACE.value})
    client.release.set()
    stop = StopController()
    reporter = PhaseReporter(client, stop)  # type: ignore[arg-type]
    reporter.report(Phase.RUNTIME_STARTED)
    reporter.report(Phase.SETTING_UP_WORKSPACE)
    with pytest.raises(ControlPlaneRejected):
        reporter.flush(timeout_seconds=10)
    assert stop.reason is StopReason.REJECTED
    with pytest.raises(ControlPlaneRejected):
        reporter.report(Phase.RUNNING_SETUP_SCRIPT)
    assert client.sent == [Phase.RUNTIME_STARTED.value]
