"""The template's resources on moto, seeded with users and conversations, and a representative
event for every function (what API Gateway, the stream or Step Functions would hand it)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from benchmarks.common import REGION, use_fake_aws

READY = {
    "agent_server_url": "http://10.0.0.7:8000",
    "agent_conversation_id": "a1b2c3",
    "workspace_dir": "/workspace/repo",
    "microagents": [],
}
# Seeded secrets (fake): the benchmarks store them sealed, as for a real user.
LLM_KEY = "sk-bench-llm-key-0000"
GIT_TOKEN = "ghp_bench_git_token_0000"  # noqa: S105
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def make_git_repository(path: Path) -> str:
    """A real repository (main and develop) for requests that name a local repository."""
    env = {
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@example.com",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@example.com",
        "HOME": str(path),
        "PATH": "/usr/bin:/bin",
    }

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, env=env)

    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main")
    (path / "README.md").write_text("bench\n")
    git("add", ".")
    git("commit", "-q", "-m", "initial")
    git("checkout", "-q", "-b", "develop")
    git("checkout", "-q", "main")
    return str(path)


@contextmanager
def git_http_server(repositories: dict[str, str]) -> Iterator[str]:
    """dulwich's smart-HTTP git server on 127.0.0.1 (a stand-in for github.com); yields its base URL."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from dulwich.repo import Repo
    from dulwich.server import DictBackend
    from dulwich.web import make_wsgi_chain

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    backend = DictBackend({path: Repo(directory) for path, directory in repositories.items()})
    server = make_server("127.0.0.1", 0, make_wsgi_chain(backend), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def moto_server() -> Iterator[str]:
    """moto on 127.0.0.1 in a thread of this process (its own processes stay AWS-free)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class SeededStack:
    """The template's resources (devstack.template_resources.provision) and the handlers in-process."""

    resources: Any
    runtime: Any
    environment: dict[str, str]
    repository: str
    api_key: str = ""
    # When set, `owner/repo` on github resolves here (the local stack's url.insteadOf rewrite).
    github_rewrite: str | None = None
    # Requests name `user/repo` on github (resolved by github_rewrite, or by benchmarks/stubs.py).
    github_repository: bool = False
    users: list[str] = field(default_factory=list)

    @property
    def handles(self) -> dict[str, str]:
        return {
            "users_table": self.resources.physical["UsersTable"],
            "conversations_table": self.resources.physical["ConversationsTable"],
            "key_id": self.resources.physical["SecretsKey"],
            "bucket": self.resources.physical["ContextBucket"],
            "state_machine_arn": self.resources.physical["ConversationWorkflow"],
            "cluster_arn": self.resources.attributes["SandboxCluster.Arn"],
        }

    # -- seeding ---------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, user_id: str = "bench-user", **kw: Any) -> dict[str, Any]:
        from tests.support.api_gateway import api_event

        event = api_event(method, path, body, user_id=user_id, **kw)
        response: dict[str, Any] = self.runtime.invoke("ApiFunction", event)
        return response

    def add_user(self, user_id: str, *, git_token: bool = True) -> None:
        settings: dict[str, Any] = {
            "llm_model": "anthropic/claude-sonnet-4",
            "llm_api_key": LLM_KEY,
            # The event intake benchmark creates from this source: the user authorised it.
            "authorized_event_sources": [self.trusted_event_source()],
        }
        if git_token:
            settings["provider_tokens"] = {"github": GIT_TOKEN}
        response = self.api("POST", "/api/settings", settings, user_id=user_id)
        assert response["statusCode"] == 200, response
        self.users.append(user_id)

    def trusted_event_source(self) -> str:
        trusted = self.resources.functions["EventIntakeFunction"].environment.get("TRUSTED_EVENT_SOURCES", "")
        return trusted.split(",")[0] or "openhands.integrations"

    def add_api_key(self, user_id: str) -> str:
        from conversation_service.logic.clock import now_iso
        from conversation_service.logic.identity import api_key_hash
        from conversation_service.services import user_store

        key = f"bench-{uuid.uuid4().hex}"
        user_store().save_api_key_hash(api_key_hash(key), user_id, now_iso())
        self.api_key = key
        return key

    def starting_conversation(self, user_id: str = "bench-user") -> str:
        response = self.api("POST", "/api/conversations", {"initial_user_msg": "bench"}, user_id=user_id)
        assert response["statusCode"] == 200, response
        return str(json.loads(response["body"])["conversation_id"])

    def launched_conversation(self, user_id: str = "bench-user") -> tuple[str, str]:
        """STARTING, context built, a sandbox token minted: what the sandbox API serves. (id, token)"""
        from conversation_service.logic.clock import now_iso
        from conversation_service.logic.workflow import sandbox_token_hash
        from conversation_service.models.domain import RuntimeStatus
        from conversation_service.services import conversation_store, creation_workflow

        conversation_id = self.starting_conversation(user_id)
        creation_workflow().initialize_context(conversation_id)
        token = f"{conversation_id}.{uuid.uuid4().hex}{uuid.uuid4().hex}"
        assert conversation_store().set_runtime_phase(
            conversation_id,
            RuntimeStatus.STARTING_RUNTIME,
            at=now_iso(),
            task_token="bench-task-token",  # noqa: S106
            sandbox_token_hash=sandbox_token_hash(token),
            context_delivered=False,
        )
        return conversation_id, token

    # -- representative events -----------------------------------------------------------------
    def event_for(self, logical_id: str, user_id: str = "bench-user") -> dict[str, Any]:
        from tests.support.api_gateway import api_event

        if logical_id == "ApiFunction":
            # With a github rewrite: `user/repo` on github, the user's github token opened (KMS).
            repository = "user/repo" if self.github_repository else self.repository
            body = {"repository": repository, "selected_branch": "develop", "initial_user_msg": "Add a README"}
            return api_event("POST", "/api/conversations", body, user_id=user_id)
        if logical_id == "AuthorizerFunction":
            return {
                "type": "TOKEN",
                "authorizationToken": f"Bearer {self.api_key}",
                "methodArn": "arn:aws:execute-api:us-east-1:123456789012:localapi/dev/POST/api/conversations",
            }
        if logical_id == "ConversationStreamFunction":
            # The INSERT of a real new conversation, as the stream carries it (NEW_AND_OLD_IMAGES).
            conversation_id = self.starting_conversation(user_id)
            image = boto3.client("dynamodb").get_item(
                TableName=self.resources.physical["ConversationsTable"],
                Key={"conversation_id": {"S": conversation_id}},
                ConsistentRead=True,
            )["Item"]
            return {
                "Records": [
                    {
                        "eventID": uuid.uuid4().hex,
                        "eventName": "INSERT",
                        "eventVersion": "1.1",
                        "eventSource": "aws:dynamodb",
                        "awsRegion": REGION,
                        "dynamodb": {
                            "Keys": {"conversation_id": {"S": conversation_id}},
                            "NewImage": image,
                            "SequenceNumber": str(uuid.uuid4().int)[:20],
                            "SizeBytes": 2000,
                            "StreamViewType": "NEW_AND_OLD_IMAGES",
                        },
                        "eventSourceARN": self.resources.attributes["ConversationsTable.StreamArn"],
                    }
                ]
            }
        if logical_id == "InitializeContextFunction":
            return {"conversation_id": self.starting_conversation(user_id)}
        if logical_id == "LaunchSandboxFunction":
            return {"conversation_id": self.starting_conversation(user_id), "task_token": "bench-task-token"}
        if logical_id == "MarkRunningFunction":
            return {"conversation_id": self.starting_conversation(user_id), "sandbox": READY}
        if logical_id == "RecordFailureFunction":
            error = {"Error": "States.HeartbeatTimeout", "Cause": "no heartbeat"}
            return {"conversation_id": self.starting_conversation(user_id), "error": error}
        if logical_id == "SandboxApiFunction":
            _, token = self.launched_conversation(user_id)
            headers = {"Authorization": f"Bearer {token}"}
            event = api_event("GET", "/sandbox/v1/context", None, user_id=None, headers=headers)
            event["resource"] = "/sandbox/{proxy+}"
            event["pathParameters"] = {"proxy": "v1/context"}
            return event
        if logical_id == "EventIntakeFunction":
            repository = "user/repo" if self.github_repository else self.repository
            envelope = {
                "version": "0",
                "id": uuid.uuid4().hex,
                "detail-type": "CreateConversation",
                "source": self.trusted_event_source(),
                "account": "123456789012",
                "time": "2026-11-26T12:00:00Z",
                "region": REGION,
                "resources": [],
                "detail": {
                    "schema_version": "1",
                    "user_id": user_id,
                    "request": {"repository": repository, "selected_branch": "develop", "initial_user_msg": "Fix it"},
                },
            }
            return {
                "Records": [
                    {
                        "messageId": str(uuid.uuid4()),
                        "receiptHandle": "bench",
                        "body": json.dumps(envelope),
                        "attributes": {
                            "ApproximateReceiveCount": "1",
                            "SentTimestamp": "1795700000000",
                            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                            "ApproximateFirstReceiveTimestamp": "1795700000001",
                        },
                        "messageAttributes": {},
                        "md5OfBody": "",
                        "eventSource": "aws:sqs",
                        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:CreateConversationQueue",
                        "awsRegion": REGION,
                    }
                ]
            }
        if logical_id == "SandboxWatchFunction":
            conversation_id = self.starting_conversation(user_id)
            task_arn = f"arn:aws:ecs:us-east-1:123456789012:task/sandboxes/{uuid.uuid4().hex}"
            return {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "ECS Task State Change",
                "source": "aws.ecs",
                "account": "123456789012",
                "time": "2026-11-26T12:05:00Z",
                "region": REGION,
                "resources": [task_arn],
                "detail": {
                    "clusterArn": self.resources.attributes["SandboxCluster.Arn"],
                    "taskArn": task_arn,
                    "startedBy": conversation_id,
                    "lastStatus": "STOPPED",
                    "desiredStatus": "STOPPED",
                    "stopCode": "EssentialContainerExited",
                    "stoppedReason": "Essential container in task exited",
                    "containers": [{"name": "sandbox", "exitCode": 137, "lastStatus": "STOPPED"}],
                },
            }
        raise KeyError(logical_id)


def seed_stack(
    work_dir: Path,
    *,
    session: boto3.Session | None = None,
    overrides: dict[str, str] | None = None,
    stack_name: str = "bench",
) -> SeededStack:
    """Provision the template on whatever endpoint boto3 points at; env of every function applied."""
    use_fake_aws()
    from conversation_service import services
    from conversation_service.dal import aws

    from devstack.lambda_runtime import LocalLambdaRuntime, apply_environment
    from devstack.template_resources import provision

    aws.client.cache_clear()
    session = session or boto3.Session(region_name=REGION)
    resources = provision(stack_name, session=session)
    environment = apply_environment(
        resources,
        {
            "ALLOW_LOCAL_REPOSITORIES": "true",
            "SANDBOX_API_URL": "http://127.0.0.1:9/sandbox",
            "SANDBOX_AGENT_SERVER_ADDRESS": "loopback",
            "MAX_ACTIVE_CONVERSATIONS": "1000",
            # This process only seeds and measures: its own metric lines are noise.
            "POWERTOOLS_METRICS_DISABLED": "true",
            **(overrides or {}),
        },
    )
    services.reset()
    runtime = LocalLambdaRuntime(resources)
    repository = make_git_repository(work_dir / "repo")
    stack = SeededStack(resources, runtime, environment, repository)
    stack.add_user("bench-user")
    stack.add_api_key("bench-user")
    return stack


def template_stream_pump(
    resources: Any, runtime: Any, session: Any, function: str = "ConversationStreamFunction"
) -> Any:
    """The conversations stream handed to `function` as template.yaml's event source mapping does:
    the records its FilterCriteria lets through (all of them when it has none)."""
    from devstack.stream_pump import StreamPump
    from devstack.template_resources import load_template

    events = load_template()["Resources"][function]["Properties"].get("Events", {})
    names = {
        name
        for event in events.values()
        if event.get("Type") == "DynamoDB"
        for item in event["Properties"].get("FilterCriteria", {}).get("Filters", [])
        for name in json.loads(item["Pattern"]).get("eventName", [])
    } or {"INSERT", "MODIFY", "REMOVE"}

    class TemplatePump(StreamPump):
        def pump_once(self) -> int:
            self._refresh_shards()
            delivered = 0
            for shard_id, iterator in list(self._iterators.items()):
                response = self._client.get_records(ShardIterator=iterator, Limit=100)
                records = [self._as_lambda_record(record) for record in response.get("Records", [])]
                chosen = [record for record in records if record["eventName"] in names]
                if chosen:
                    if self._deliver(chosen).get("batchItemFailures"):
                        continue
                    delivered += len(chosen)
                if response.get("NextShardIterator"):
                    self._iterators[shard_id] = response["NextShardIterator"]
            return delivered

    return TemplatePump(resources.attributes["ConversationsTable.StreamArn"], runtime, function, session)
