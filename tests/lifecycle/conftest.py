"""The lifecycle under moto: the real ASL and handlers (tests/integration's WorkflowHarness), plus
what that harness does not wire yet and the lifecycle needs:

- a stream pump that hands *every* record (INSERT, MODIFY, REMOVE) to WorkflowStarterFunction,
  as the template's event source mapping now does (no FilterCriteria), checkpointing like Lambda
  (after a batch item failure, reading again from the failed record);
- the template's EventBridge bus and rules, created in moto from template.yaml;
- an observer queue subscribed to the bus (a rule on `openhands.conversations`), to read the
  published ConversationStatusChanged events;
- an SQS poller that hands CreateConversationQueue's messages to EventIntakeFunction as Lambda's
  SQS event source does (deleting what succeeded, leaving the batch item failures).
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

from devstack.lambda_runtime import FunctionError
from devstack.stream_pump import StreamPump
from devstack.template_resources import StackResources, TemplateResolver, load_template
from tests.helpers import api_event, make_repository
from tests.integration.conftest import MOTO_CONFIG, WorkflowHarness, make_harness

LLM_KEY = "sk-lifecycle-secret-5d21"
FIRST_MESSAGE = "please fix the flaky test in the parser module"
USER = "user-1"
OTHER_USER = "user-2"
CONVERSATIONS = "/api/conversations"


class FullStreamPump(StreamPump):
    """Every record to the function, as the template's (unfiltered) event source mapping does.

    It asks for a fresh iterator on every poll: moto rolls a cancelled transaction back by putting
    a deep copy of the table in place, stream shard included, so an iterator taken before a
    cancelled transaction (a creation at the limit, say) never sees a record again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume: dict[str, tuple[str, str | None]] = {}  # shard id -> (iterator type, sequence)

    def pump_once(self) -> int:
        shards = self._client.describe_stream(StreamArn=self._stream_arn)["StreamDescription"].get("Shards", [])
        delivered = 0
        for shard in shards:
            shard_id = shard["ShardId"]
            kind, sequence = self._resume.get(shard_id, ("TRIM_HORIZON", None))
            request = {"StreamArn": self._stream_arn, "ShardId": shard_id, "ShardIteratorType": kind}
            if sequence is not None:
                request["SequenceNumber"] = sequence
            iterator = self._client.get_shard_iterator(**request)["ShardIterator"]
            response = self._client.get_records(ShardIterator=iterator, Limit=100)
            records = [self._as_lambda_record(record) for record in response.get("Records", [])]
            if not records:
                continue
            failures = self._deliver(records).get("batchItemFailures") or []
            if failures:
                # Lambda checkpoints before the first failure and reads again from it.
                failed = min((str(item["itemIdentifier"]) for item in failures), key=int)
                self._resume[shard_id] = ("AT_SEQUENCE_NUMBER", failed)
                continue
            last = max((str(record["dynamodb"]["SequenceNumber"]) for record in records), key=int)
            self._resume[shard_id] = ("AFTER_SEQUENCE_NUMBER", last)
            delivered += len(records)
        return delivered


def provision_events(session: boto3.Session, resources: StackResources) -> None:
    """The template's EventBridge bus and rules (targets resolved), in moto."""
    template = load_template()
    resolver = TemplateResolver(template, resources)
    events = session.client("events")
    definitions = template["Resources"]
    for logical_id, spec in definitions.items():
        if spec["Type"] == "AWS::Events::EventBus":
            name = str(resolver.resolve(spec["Properties"]["Name"]))
            resources.physical[logical_id] = name
            resources.attributes[f"{logical_id}.Arn"] = events.create_event_bus(Name=name)["EventBusArn"]
            resources.attributes[f"{logical_id}.Name"] = name
    for logical_id, spec in definitions.items():
        if spec["Type"] != "AWS::Events::Rule":
            continue
        properties = resolver.resolve(spec["Properties"])
        name = f"{resources.stack_name}-{logical_id}"
        resources.attributes[f"{logical_id}.Arn"] = events.put_rule(
            Name=name, EventBusName=properties["EventBusName"], EventPattern=json.dumps(properties["EventPattern"])
        )["RuleArn"]
        events.put_targets(
            Rule=name,
            EventBusName=properties["EventBusName"],
            Targets=[{"Id": target["Id"], "Arn": target["Arn"]} for target in properties["Targets"]],
        )


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
        return next(item["value"] for item in overrides if item["name"] == "SANDBOX_TOKEN")

    def sandbox(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        return self.harness.sandbox(method, path, token, body)

    def drive_to_running(self, conversation_id: str, user: str = USER) -> dict[str, Any]:
        """Play the sandbox: fetch the context, report phases, then ready."""
        token = self.sandbox_token(conversation_id)
        status, context = self.sandbox("GET", "/sandbox/v1/context", token)
        assert status == 200, context
        for phase in ("STATUS$RUNTIME_STARTED", "STATUS$SETTING_UP_WORKSPACE"):
            assert self.sandbox("POST", "/sandbox/v1/events", token, {"type": "phase", "phase": phase})[0] == 200
        ready = {"type": "ready", "agent_server_url": "http://10.0.0.9:8000", "agent_conversation_id": "agent-1"}
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
        """One poll of CreateConversationQueue into EventIntakeFunction, as Lambda's SQS poller."""
        sqs = self.session.client("sqs")
        queue_url = self.resources.physical["CreateConversationQueue"]
        queue_arn = self.resources.attributes["CreateConversationQueue.Arn"]
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=5, AttributeNames=["All"], VisibilityTimeout=0
        ).get("Messages", [])
        if not messages:
            return {"batchItemFailures": [], "records": 0}
        return self.deliver_intake(messages, queue_url, queue_arn)

    def deliver_intake(self, messages: list[dict[str, Any]], queue_url: str, queue_arn: str) -> dict[str, Any]:
        records = [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
        try:
            result = dict(self.harness.runtime.invoke("EventIntakeFunction", {"Records": records}))
        except FunctionError:
            return {"batchItemFailures": [{"itemIdentifier": record["messageId"]} for record in records]}
        failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        sqs = self.session.client("sqs")
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return {**result, "records": len(records)}

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
        base = make_harness(monkeypatch, parameters)
        provision_events(base.session, base.resources)
        pump = FullStreamPump(
            base.resources.attributes["ConversationsTable.StreamArn"],
            base.runtime,
            "WorkflowStarterFunction",
            base.session,
        )
        harness = WorkflowHarness(base.resources, base.runtime, pump, base.session)
        sqs = base.session.client("sqs")
        observer_url = sqs.create_queue(QueueName="status-observer")["QueueUrl"]
        observer_arn = sqs.get_queue_attributes(QueueUrl=observer_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events = base.session.client("events")
        bus = base.resources.physical["ConversationEventBus"]
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
