"""The whole service on loopback: moto (AWS), our handlers (Lambda), moto's Step Functions engine
running our ASL, the stream pump (event source mapping), local processes (Fargate), a local git
server (GitHub) and the API (API Gateway). See devstack/README.md.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3

from devstack.api_gateway import LocalApiServer, LocalRestApi
from devstack.console import divert_embedded_metrics, say
from devstack.fargate import LocalFargate
from devstack.git_server import LocalGitServer, create_sample_repositories
from devstack.lambda_runtime import LocalLambdaRuntime, apply_environment
from devstack.local_aws import LocalAws
from devstack.phase_log import ConversationPhaseLog
from devstack.stream_pump import StreamPump
from devstack.template_resources import REGION, ROOT, StackResources, provision

LOCAL_USER_ID = "local-user"
STACK_NAME = "local"
STATE_MARKER = ".devstack-state"
PLACEHOLDER_MODEL = "openai/placeholder-model-set-LLM_MODEL"
PLACEHOLDER_API_KEY = "placeholder-set-LLM_API_KEY"
STREAM_POLL_SECONDS = 0.1


class StateDirectoryNotOurs(Exception):
    """The state directory holds files this stack did not write: it is not wiped."""


@dataclass(frozen=True)
class StackOptions:
    port: int = 3000
    moto_port: int = 0
    git_port: int = 0
    state_dir: Path = ROOT / ".devstack"
    llm_model: str | None = None
    llm_api_key: str | None = None


def prepare_state_dir(path: Path) -> Path:
    """Wipe and recreate `path`, but only if it is empty or was made by this stack."""
    path = path.resolve()
    if path.exists() and any(path.iterdir()) and not (path / STATE_MARKER).exists():
        raise StateDirectoryNotOurs(f"{path} is not empty and has no {STATE_MARKER}: refusing to wipe it")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / STATE_MARKER).write_text("Made by `python -m devstack`; wiped at each start.\n")
    for child in ("logs", "repos", "sandboxes", "workspaces"):
        (path / child).mkdir()
    return path


class _OneLineFormatter(logging.Formatter):
    """`<logger>: <message>` without the traceback (it is in the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.name}: {record.getMessage()} (see logs/functions.log)"


def _not_a_refused_api_key(record: logging.LogRecord) -> bool:
    """The authorizer raising `Unauthorized` is how it refuses a key: not worth a console line."""
    return not (isinstance(record.args, tuple) and record.args[:2] == ("AuthorizerFunction", "Exception"))


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.state_dir = options.state_dir
        self.api_url = ""
        self.sandbox_api_url = ""
        self.api_key = ""
        self.resources: StackResources | None = None
        self._aws = LocalAws(options.moto_port)
        self._git: LocalGitServer | None = None
        self._api_server: LocalApiServer | None = None
        self._fargate: LocalFargate | None = None
        self._pump: StreamPump | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._function_log: IO[str] | None = None
        self._serving = False
        self.repositories: dict[str, dict[str, str]] = {}

    # -- start -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.state_dir = prepare_state_dir(self.options.state_dir)
        self._route_function_logs()
        # Bind the API port first: a port in use should fail before anything else starts.
        self._api_server = LocalApiServer(self.options.port, None)
        port = int(self._api_server.server_address[1])
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.sandbox_api_url = f"http://127.0.0.1:{port}/sandbox"

        self._aws.start()
        self.repositories = create_sample_repositories(self.state_dir / "repos")
        self._git = LocalGitServer(self.state_dir / "repos", self.options.git_port)
        self._git.start()

        session = boto3.Session(region_name=REGION)
        resources = provision(STACK_NAME, session=session)
        self.resources = resources
        apply_environment(
            resources,
            {
                "LOCAL_USER_ID": LOCAL_USER_ID,
                "ALLOW_LOCAL_REPOSITORIES": "true",
                "SANDBOX_API_URL": self.sandbox_api_url,
                "DEFAULT_RUNTIME": "local",
                "GIT_URL_REWRITES": json.dumps({"https://github.com/": self._git.base_url}),
                "POWERTOOLS_TRACE_DISABLED": "true",
            },
        )
        runtime = LocalLambdaRuntime(resources)
        self._reset_services()
        runtime.install_into_moto()
        self._seed_local_user()

        self._pump = StreamPump(
            resources.attributes["ConversationsTable.StreamArn"],
            runtime,
            "WorkflowStarterFunction",
            session,
            observer=ConversationPhaseLog(),
        )
        self._spawn("stream-pump", self._pump_forever)
        self._fargate = LocalFargate(session.client("ecs"), resources.attributes["SandboxCluster.Arn"], self.state_dir)
        self._fargate.start()
        self._api_server.api = LocalRestApi(resources, runtime)
        self._spawn("api-server", self._api_server.serve_forever)
        self._serving = True

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _route_function_logs(self) -> None:
        """Handler logs (Powertools JSON, tracebacks) to logs/functions.log, their metrics to
        logs/metrics.log (CloudWatch's part); a one-line note on the console for a function error."""
        divert_embedded_metrics(self.state_dir / "logs" / "metrics.log")
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        self._function_log = (self.state_dir / "logs" / "functions.log").open("a", buffering=1)
        file_handler = logging.StreamHandler(self._function_log)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.setFormatter(_OneLineFormatter())
        console.addFilter(_not_a_refused_api_key)
        for name in ("devstack.lambda", "devstack.aws"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logger.addHandler(file_handler)
            logger.addHandler(console)

    def _reset_services(self) -> None:
        """The handlers' cached config and clients are built from the environment just set."""
        from conversation_service import observability, services
        from conversation_service.dal import aws

        aws.client.cache_clear()
        services.reset()
        handler = observability.logger.registered_handler
        if isinstance(handler, logging.StreamHandler) and self._function_log is not None:
            handler.setStream(self._function_log)

    def _seed_local_user(self) -> None:
        """Settings through the real SettingsService (secrets sealed with KMS), and an API key."""
        from conversation_service.logic.clock import now_iso
        from conversation_service.logic.identity import api_key_hash
        from conversation_service.models.api import SettingsUpdate
        from conversation_service.services import settings_service, user_store

        settings_service().update(
            LOCAL_USER_ID,
            SettingsUpdate(
                llm_model=self.options.llm_model or PLACEHOLDER_MODEL,
                llm_api_key=self.options.llm_api_key or PLACEHOLDER_API_KEY,
            ),
        )
        self.api_key = f"devstack-{secrets.token_urlsafe(24)}"
        user_store().save_api_key_hash(api_key_hash(self.api_key), LOCAL_USER_ID, now_iso())
        key_file = self.state_dir / "local-api-key"
        key_file.write_text(self.api_key + "\n")
        key_file.chmod(0o600)

    def _pump_forever(self) -> None:
        assert self._pump is not None
        failures = 0
        while not self._stopping.wait(STREAM_POLL_SECONDS):
            try:
                self._pump.pump_once()
                failures = 0
            except Exception as error:
                failures += 1
                if failures == 1 and not self._stopping.is_set():
                    say(f"stream pump: {type(error).__name__}: {error}")

    # -- what to print ---------------------------------------------------------------------------
    def describe(self) -> list[str]:
        assert self._git is not None
        model = self.options.llm_model or f"{PLACEHOLDER_MODEL} (placeholder: export LLM_MODEL)"
        key = "set" if self.options.llm_api_key else f"{PLACEHOLDER_API_KEY} (placeholder: export LLM_API_KEY)"
        return [
            f"devstack: state in {self.state_dir} (wiped at each start)",
            f"  API            {self.api_url}/conversations   docs: {self.api_url}/docs",
            f"  sandbox API    {self.sandbox_api_url}",
            f"  AWS (moto)     {self._aws.endpoint_url}",
            f"  git (GitHub)   {self._git.base_url}user/repo.git  (https://github.com/ is rewritten here)",
            f"                 {self._git.base_url}user/broken-setup.git  (its setup script exits 3)",
            f"  user           {LOCAL_USER_ID}: no Authorization header needed; or "
            f"'Authorization: Bearer {self.api_key}'",
            f"  LLM            model {model}; API key {key}",
            f"  logs           {self.state_dir / 'logs'}, {self.state_dir / 'sandboxes'}/<task>/bootstrap.log",
        ]

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Sandboxes (and everything they started) first, then the servers. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._fargate is not None:
            self._fargate.stop()
        if self._api_server is not None:
            if self._serving:
                self._api_server.shutdown()
            self._api_server.server_close()
        if self._git is not None:
            self._git.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self._aws.stop()
        if self._function_log is not None:
            self._function_log.flush()
        os.environ.pop("AWS_ENDPOINT_URL", None)
