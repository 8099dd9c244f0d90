"""The lifecycle under moto: the real ASL and handlers (tests/integration's WorkflowHarness, whose
devstack stream pump hands every record to ConversationStreamFunction and whose provisioning creates
the template's bus and rules), plus:

- an observer queue subscribed to the bus (a rule on `openhands.conversations`), to read the
  published ConversationStatusChanged events;
- devstack's SQS event source, polled on demand, handing CreateConversationQueue's messages to
  EventIntakeFunction as Lambda does (deleting what succeeded, leaving the batch item failures).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from conversation_service import services
from conversation_service.dal import aws
from conversation_service.dal.workflow import WorkflowEngine
from moto import mock_aws

from devstack.sqs_poller import SqsEventSource
from devstack.task_credentials import open_sealed_sandbox_token
from devstack.template_resources import StackResources
from tests.integration.conftest import MOTO_CONFIG, WorkflowHarness, make_harness
from tests.support.api_gateway import api_event
from tests.support.git_repositories import make_repository

LLM_KEY = "sk-lifecycle-secret-5d21"
FIRST_MESSAGE = "please fix the flaky test in the parser module"
USER = "user-1"
OTHER_USER = "user-2"
CONVERSATIONS = "/api/conversations"


@dataclass
class Lifecycle:
    """A WorkflowHarness with the whole stream, the bus, an observer of the bus and an SQS poller."""

    harness: WorkflowHarness
    observer_url: str
    # Executions the stream consumer asked Step Functions to stop. moto marks an execution ABORTED
    # only when its current step returns (a waitForTaskToken step waits for its heartbeat timeout),
    # where AWS aborts it at once: tests check the request, and that a late step changes nothing.
    stopped_executions: list[str] = field(default_factory=list)

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def session(self) -> boto3.Session:
        return self.harness.session

    @property
    def resources(self) -> StackResources:
        return self.harness.resources

    def pump(self) -> None:
        self.harness.pump.pump_once()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
        return self.harness.wait_for(predicate, timeout=timeout, what=what)

    def settle(self, seconds: float = 0.3) -> None:
        """Let the stream and the workflow catch up."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump()
            time.sleep(0.05)

    # -- the API ----------------------------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str = USER,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        response = self.harness.runtime.invoke("ApiFunction", api_event(method, path, body, user_id=user, query=query))
        return int(response["statusCode"]), json.loads(response["body"])

    def configure(self, user: str = USER, **settings: Any) -> None:
        body = {"llm_model": "anthropic/claude", "llm_api_key": LLM_KEY, **settings}
        status, answer = self.call("POST", "/api/settings", body, user=user)
        assert status == 200, answer

    def create(self, body: dict[str, Any] | None = None, *, user: str = USER) -> str:
        status, answer = self.call("POST", CONVERSATIONS, body or {}, user=user)
        assert status == 200, answer
        return str(answer["conversation_id"])

    def view(self, conversation_id: str, user: str = USER) -> dict[str, Any]:
        status, answer = self.call("GET", f"{CONVERSATIONS}/{conversation_id}", user=user)
        assert status == 200, answer
        return dict(answer)

    def wait_status(self, conversation_id: str, status: str, user: str = USER, timeout: float = 20) -> dict[str, Any]:
        return dict(
            self.wait_for(
                lambda: (view := self.view(conversation_id, user))["conversation_status"] == status and view,
                timeout=timeout,
                what=f"{conversation_id} {status}",
            )
        )

    def active_count(self, user: str = USER) -> int:
        return services.user_store().active_count(user)

    # -- the workflow and the sandbox ----------------------------------------------------------
    def execution_status(self, name: str) -> str | None:
        sfn = self.session.client("stepfunctions")
        arn = self.resources.physical["ConversationWorkflow"].replace(":stateMachine:", ":execution:") + f":{name}"
        try:
            return str(sfn.describe_execution(executionArn=arn)["status"])
        except sfn.exceptions.ExecutionDoesNotExist:
            return None

    def tasks(self, conversation_id: str, desired: str | None = None) -> list[dict[str, Any]]:
        ecs = self.session.client("ecs")
        cluster = self.resources.attributes["SandboxCluster.Arn"]
        filters = {"desiredStatus": desired} if desired else {}
        arns = ecs.list_tasks(cluster=cluster, startedBy=conversation_id, **filters)["taskArns"]
        if not arns:
            return []
        return list(ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"])

    def running_task(self, conversation_id: str) -> dict[str, Any]:
        """The conversation's one task ECS still wants running (waits for the launch)."""
        tasks = self.wait_for(lambda: self.tasks(conversation_id, "RUNNING"), what="a running sandbox task")
        assert len(tasks) == 1, tasks
        return dict(tasks[0])

    def sandbox_token(self, conversation_id: str) -> str:
        overrides = self.running_task(conversation_id)["overrides"]["containerOverrides"][0]["environment"]
        return open_sealed_sandbox_token(self.harness.session.client("kms"), overrides, conversation_id)

    def sandbox(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        return self.harness.sandbox(method, path, token, body)

    def drive_to_running(self, conversation_id: str, user: str = USER) -> dict[str, Any]:
        """Play the sandbox: fetch the context, report phases, then ready."""
        token = self.sandbox_token(conversation_id)
        status, context = self.sandbox("GET", "/sandbox/v1/context", token)
        assert status == 200, context
        for phase in ("STATUS$RUNTIME_STARTED", "STATUS$SETTING_UP_WORKSPACE"):
            assert self.sandbox("POST", "/sandbox/v1/events", token, {"type": "phase", "phase": phase})[0] == 200
        ready = {"type": "ready", "agent_server_url": "http://127.0.0.1:8000", "agent_conversation_id": "agent-1"}
        assert self.sandbox("POST", "/sandbox/v1/events", token, ready)[0] == 200
        self.wait_status(conversation_id, "RUNNING", user)
        return dict(context)

    # -- events ------------------------------------------------------------------------------------
    def published(self) -> list[dict[str, Any]]:
        """Everything the observer queue received from the bus so far (EventBridge envelopes)."""
        sqs = self.session.client("sqs")
        received: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.observer_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return received
            for message in messages:
                received.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.observer_url, ReceiptHandle=message["ReceiptHandle"])

    def put_event(self, source: str, detail_type: str, detail: dict[str, Any]) -> None:
        response = self.session.client("events").put_events(
            Entries=[
                {
                    "EventBusName": self.resources.physical["ConversationEventBus"],
                    "Source": source,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                }
            ]
        )
        assert response["FailedEntryCount"] == 0, response

    def poll_intake(self) -> dict[str, Any]:
        """One poll of CreateConversationQueue into EventIntakeFunction, as Lambda's SQS poller
        (failed messages are visible again at once, instead of after the queue's timeout)."""
        source = SqsEventSource(
            self.resources.physical["CreateConversationQueue"],
            self.resources.attributes["CreateConversationQueue.Arn"],
            self.harness.runtime,
            "EventIntakeFunction",
            self.session,
            batch_size=5,
            visibility_timeout=0,
        )
        return source.poll_once()

    def dead_letters(self) -> list[dict[str, Any]]:
        sqs = self.session.client("sqs")
        url = self.resources.physical["CreateConversationDeadLetterQueue"]
        received: list[dict[str, Any]] = []
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                received.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return received


@contextmanager
def lifecycle_stack(monkeypatch: pytest.MonkeyPatch, parameters: dict[str, str] | None = None) -> Iterator[Lifecycle]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        harness = make_harness(monkeypatch, parameters)
        sqs = harness.session.client("sqs")
        observer_url = sqs.create_queue(QueueName="status-observer")["QueueUrl"]
        observer_arn = sqs.get_queue_attributes(QueueUrl=observer_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events = harness.session.client("events")
        bus = harness.resources.physical["ConversationEventBus"]
        events.put_rule(
            Name="observe-status", EventBusName=bus, EventPattern=json.dumps({"source": ["openhands.conversations"]})
        )
        events.put_targets(Rule="observe-status", EventBusName=bus, Targets=[{"Id": "observer", "Arn": observer_arn}])
        life = Lifecycle(harness, observer_url)
        original_stop = WorkflowEngine.stop

        def recording_stop(engine: WorkflowEngine, execution_name: str, cause: str) -> bool:
            life.stopped_executions.append(execution_name)
            return original_stop(engine, execution_name, cause)

        monkeypatch.setattr(WorkflowEngine, "stop", recording_stop)
        try:
            yield life
        finally:
            aws.client.cache_clear()
            services.reset()


@pytest.fixture
def life(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lifecycle]:
    with lifecycle_stack(monkeypatch) as stack:
        stack.configure(USER)
        stack.configure(OTHER_USER)
        yield stack


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    make_repository(path)
    return path
