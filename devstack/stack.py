"""The whole service on loopback: moto (AWS, EventBridge included), our handlers (Lambda), moto's
Step Functions engine running our ASL, the stream pump and the SQS poller (event source
mappings), local processes (Fargate, with their task state changes), a local git server (GitHub)
and the API (API Gateway). See devstack/README.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3

from devstack import pool_wakes
from devstack.api_gateway import LocalApiServer, LocalRestApi, SandboxApiFaults
from devstack.console import divert_embedded_metrics, say
from devstack.fargate import LocalFargate
from devstack.git_server import LocalGitServer, create_sample_repositories
from devstack.lambda_runtime import FunctionError, LocalLambdaRuntime, apply_environment
from devstack.local_aws import FAKE_CREDENTIALS, LocalAws
from devstack.moto_wakes import stop_waking
from devstack.phase_log import ConversationPhaseLog
from devstack.sqs_poller import SqsEventSource
from devstack.stream_pump import StreamPump, wake_on_stream_records
from devstack.task_credentials import TaskCredentialsServer
from devstack.template_resources import REGION, ROOT, EventSourceSpec, StackResources, provision

LOCAL_USER_ID = "local-user"
STACK_NAME = "local"
STATE_MARKER = ".devstack-state"
PLACEHOLDER_MODEL = "openai/placeholder-model-set-LLM_MODEL"
PLACEHOLDER_API_KEY = "placeholder-set-LLM_API_KEY"
STREAM_POLL_SECONDS = 0.5  # a fallback: a write to a table with a stream wakes its pump at once
QUEUE_POLL_SECONDS = 0.2


def event_matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge's pattern matching (moto's implementation of it)."""
    from moto.events.models import EventPattern

    return bool(EventPattern.load(json.dumps(pattern)).matches_event(event))  # type: ignore[arg-type]


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
    llm_base_url: str | None = None
    """An OpenAI-compatible server (e.g. `python -m devstack.scripted_model`); None: the provider's own."""
    sandbox_api_faults: float = 0.0
    """Share of the sandboxes' channel calls (agent events, statuses, inbox polls, acks) failed with 502."""
    sandbox_image: str | None = None
    """Run sandboxes from this container image (buildah) instead of as local processes."""
    # Warm sandboxes kept idle (the template's PoolTargetIdle). `make dev` asks for 2; code that
    # boots a stack without saying gets none, so a test never pays for boots it does not use.
    pool_target_idle: int = 0


def schedule_seconds(expression: str) -> float:
    """`rate(5 minutes)` -> 300.0 (the only form the template uses)."""
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not match:
        raise NotImplementedError(f"only rate(...) schedules run locally, not {expression!r}")
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return float(int(match.group(1)) * unit)


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
        self._task_credentials: TaskCredentialsServer | None = None
        self._runtime: LocalLambdaRuntime | None = None
        self._session: boto3.Session | None = None
        self._stopping = threading.Event()
        self._wakes: list[threading.Event] = []
        self._stream_lock = threading.Lock()  # stream pumps take turns (see forget_stream_iterators)
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
        resources = provision(STACK_NAME, {"PoolTargetIdle": str(self.options.pool_target_idle)}, session=session)
        self.resources = resources
        apply_environment(
            resources,
            {
                "LOCAL_USER_ID": LOCAL_USER_ID,
                "ALLOW_LOCAL_REPOSITORIES": "true",
                "SANDBOX_API_URL": self.sandbox_api_url,
                "SANDBOX_AGENT_SERVER_ADDRESS": "loopback",
                "DEFAULT_RUNTIME": "local",
                "GIT_URL_REWRITES": json.dumps({"https://github.com/": self._git.base_url}),
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POOL_ASSIGNMENT_POLL_SECONDS": str(pool_wakes.LOCAL_POLL_SECONDS),
            },
        )
        runtime = LocalLambdaRuntime(resources)  # puts the layer on sys.path
        pool_wakes.wake_on_pool_writes(resources.physical["SandboxPoolTable"])
        self._runtime, self._session = runtime, session
        self._reset_services()
        runtime.install_into_moto()
        self._seed_local_user()

        for source in resources.event_sources:
            self._start_event_source(source)
        self._task_credentials = TaskCredentialsServer(FAKE_CREDENTIALS, resources.attributes["SandboxTaskRole.Arn"])
        self._task_credentials.start()
        self._fargate = LocalFargate(
            session.client("ecs"),
            resources.attributes["SandboxCluster.Arn"],
            self.state_dir,
            on_task_stopped=self._publish_aws_event,
            sandbox_image=self.options.sandbox_image,
            task_credentials=self._task_credentials,
            kms_endpoint_url=self._aws.endpoint_url,
        )
        self._fargate.start()
        self._api_server.api = LocalRestApi(resources, runtime, SandboxApiFaults(self.options.sandbox_api_faults))
        self._spawn("api-server", self._api_server.serve_forever)
        self._serving = True
        for spec in resources.functions.values():
            for schedule in spec.schedules:
                self._start_schedule(spec.logical_id, schedule_seconds(schedule))

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
                llm_base_url=self.options.llm_base_url,
            ),
        )
        self.api_key = f"devstack-{secrets.token_urlsafe(24)}"
        user_store().save_api_key_hash(api_key_hash(self.api_key), LOCAL_USER_ID, now_iso())
        key_file = self.state_dir / "local-api-key"
        key_file.write_text(self.api_key + "\n")
        key_file.chmod(0o600)

    # -- event sources ---------------------------------------------------------------------------
    def _start_event_source(self, source: EventSourceSpec) -> None:
        """The template's event source mappings: the conversations stream (with the phase log
        watching it) and the CreateConversation queue, each polled by a thread of its own."""
        assert self.resources is not None and self._runtime is not None and self._session is not None
        name = f"{source.kind.lower()}-{source.function}"
        if source.kind == "DynamoDB":
            on_failure = self._send_to_queue(source.on_failure_arn) if source.on_failure_arn else None
            observed = source.source_arn == self.resources.attributes.get("ConversationsTable.StreamArn")
            pump = StreamPump(
                source.source_arn,
                self._runtime,
                source.function,
                self._session,
                observer=ConversationPhaseLog() if observed else None,
                batch_size=source.batch_size,
                maximum_retry_attempts=source.maximum_retry_attempts,
                bisect_batch_on_function_error=source.bisect_batch_on_function_error,
                on_failure=on_failure,
            )

            def pump_and_forget() -> None:
                # moto keeps every stream iterator it issues; none is in use between two polls.
                with self._stream_lock:
                    try:
                        pump.pump_once()
                    finally:
                        self._aws.forget_stream_iterators()

            woken = threading.Event()
            self._wakes.append(woken)
            wake_on_stream_records(woken)
            self._spawn(name, lambda: self._poll_forever(name, pump_and_forget, STREAM_POLL_SECONDS, woken))
        elif source.kind == "SQS":
            poller = SqsEventSource(
                self.resources.queue_url(source.source_arn),
                source.source_arn,
                self._runtime,
                source.function,
                self._session,
                batch_size=source.batch_size,
                report_batch_item_failures=source.report_batch_item_failures,
            )
            self._spawn(name, lambda: self._poll_forever(name, poller.poll_once, QUEUE_POLL_SECONDS))

    def _start_schedule(self, function: str, interval: float) -> None:
        """A `Schedule` event: the function now, then at its rate (EventBridge Scheduler's part)."""
        assert self._runtime is not None
        runtime = self._runtime

        def run_scheduled() -> None:
            while True:
                try:
                    runtime.invoke(function, {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
                except FunctionError as error:
                    if not self._stopping.is_set():
                        say(f"{function} (scheduled) failed: {error.error_type}: {error}")
                if self._stopping.wait(interval):
                    return

        self._spawn(f"schedule-{function}", run_scheduled)

    def _send_to_queue(self, queue_arn: str) -> Callable[[dict[str, Any]], None]:
        assert self.resources is not None and self._session is not None
        url = self.resources.queue_url(queue_arn)
        sqs = self._session.client("sqs")

        def send(record: dict[str, Any]) -> None:
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))
            say(f"stream batch given up after its retries: described in {url.rsplit('/', 1)[-1]}")

        return send

    def _poll_forever(
        self, name: str, poll: Callable[[], Any], interval: float, woken: threading.Event | None = None
    ) -> None:
        """``poll()`` every ``interval`` seconds, and at once whenever ``woken`` is set."""
        wake = woken or self._stopping  # stop() sets both
        failures = 0
        while True:
            wake.wait(interval)
            if self._stopping.is_set():
                return
            if woken is not None:
                woken.clear()
            try:
                poll()
                failures = 0
            except Exception as error:
                failures += 1
                if failures == 1 and not self._stopping.is_set():
                    say(f"{name}: {type(error).__name__}: {error}")

    def _publish_aws_event(self, event: dict[str, Any]) -> None:
        """An event an AWS service publishes on the default bus ("ECS Task State Change"): each
        function whose template rule (an EventBridgeRule event, e.g. SandboxWatchFunction's)
        matches it is invoked with it. Nothing else happens to it, as in a stack without such rule."""
        assert self.resources is not None and self._runtime is not None
        for rule in self.resources.function_rules:
            if rule.bus != "default" or not event_matches(rule.pattern, event):
                continue
            try:
                self._runtime.invoke(rule.function, event)
            except FunctionError as error:
                say(f"{rule.function} failed on {event.get('detail-type')}: {error.error_type}: {error}")

    # -- what to print ---------------------------------------------------------------------------
    def describe(self) -> list[str]:
        assert self._git is not None
        model = self.options.llm_model or f"{PLACEHOLDER_MODEL} (placeholder: export LLM_MODEL)"
        key = "set" if self.options.llm_api_key else f"{PLACEHOLDER_API_KEY} (placeholder: export LLM_API_KEY)"
        return [
            f"devstack: state in {self.state_dir} (wiped at each start)",
            f"  API            {self.api_url}/conversations   docs: {self.api_url}/docs",
            f"  sandbox API    {self.sandbox_api_url}",
            f"  AWS (moto)     {self._aws.endpoint_url}  (region {REGION}, any credentials)",
            f"  events         bus {self._bus_name()} on the AWS endpoint: CreateConversation from "
            f"{self._trusted_sources()} creates conversations (docs/events.md)",
            f"  git (GitHub)   {self._git.base_url}user/repo.git  (https://github.com/ is rewritten here)",
            f"                 {self._git.base_url}user/broken-setup.git  (its setup script exits 3)",
            f"  user           {LOCAL_USER_ID}: no Authorization header needed; or "
            f"'Authorization: Bearer {self.api_key}'",
            f"  LLM            model {model}; API key {key}"
            + (f"; base URL {self.options.llm_base_url}" if self.options.llm_base_url else ""),
            f"  logs           {self.state_dir / 'logs'}, {self.state_dir / 'sandboxes'}/<task>/bootstrap.log",
            f"  sandboxes      {self._sandbox_mode()}",
            f"  warm pool      {self.options.pool_target_idle} idle sandbox(es) kept booted (--pool N; 0 turns it off)",
        ]

    def _sandbox_mode(self) -> str:
        if self.options.sandbox_image:
            return f"from the image {self.options.sandbox_image} (buildah run --isolation chroot)"
        return "local processes (.venv-agent; --sandbox-image runs them from the container image)"

    def _bus_name(self) -> str:
        return str(self.resources.physical.get("ConversationEventBus", "-")) if self.resources else "-"

    def _trusted_sources(self) -> str:
        return self.resources.parameters.get("TrustedEventSources", "-") if self.resources else "-"

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Sandboxes (and everything they started) first, then the servers. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for woken in self._wakes:
            stop_waking(woken)
            woken.set()
        if self._fargate is not None:
            self._fargate.stop()
        if self._task_credentials is not None:
            self._task_credentials.stop()
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
