"""Least privilege in template.yaml: every policy the stack deploys, walked statement by statement.

The template is first translated by SAM itself (tests/reliability/sam_translate.py, run with
.venv-sam), so what is checked is what CloudFormation receives: SAM policy templates expanded,
the managed policies SAM adds, inline statements, and the resource policies (key, bucket,
queue, bus). Every Allow statement must:

- name its actions exactly: no `*` anywhere in an action (`dynamodb:*`, `sqs:SendMessage*`);
- scope every resource to something of this stack: the resource (or, where the action takes
  no resource ARN, its Condition) refers to a resource or parameter of the template (`!GetAtt
  ConversationsTable.Arn`, `!Sub ${ContextBucket.Arn}/conversations/*`) or is named after the
  stack (`${AWS::StackName}-conversation-workflow`), never a bare `*`;
- keep S3 object access to a prefix (`<bucket>/conversations/*`, not `<bucket>/*`);
- bind KMS use to an encryption context (`kms:EncryptionContext:...` in its Condition), so a
  key opens only what was sealed for a named user (and conversation, or purpose);
- use no NotAction / NotResource.

Only the SAM policy templates in ALLOWED_SAM_POLICY_TEMPLATES may appear in `Policies`: each
expands to one action on one named resource. The CRUD, read and write templates grant what
the code never calls (Scan, BatchWriteItem, DeleteItem, PutObjectAcl...): write the statement.

Adding a function or a table (talk-service, pool): give each function a `Statement` list with
the DynamoDB actions its dal calls (GetItem, PutItem, UpdateItem, DeleteItem, Query on
`${Table.Arn}/index/<Name>`, TransactWriteItems needs the per-item actions) on `!GetAtt
<Table>.Arn`; that passes as is. A statement that cannot be scoped (an AWS API that takes no
resource ARN) goes into JUSTIFIED_STATEMENTS below by (logical id of the role or resource, Sid),
with the reason, and gets that `Sid` in the template; a managed policy goes into
JUSTIFIED_MANAGED_POLICIES with the roles that may carry it. An entry that no longer matches
anything fails the test too, so the list stays short and true.

The other half, that nothing the code calls is missing, is tests/lifecycle/test_permissions_used.py:
it records every boto3 call of every function through a conversation's whole life and looks each
up in that function's role (moto does not evaluate IAM).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.template_resources import load_template

ROOT = Path(__file__).resolve().parents[2]
SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"
TRANSLATE = Path(__file__).with_name("sam_translate.py")

ALLOWED_SAM_POLICY_TEMPLATES = {
    "LambdaInvokePolicy",  # lambda:InvokeFunction on the named function
    "StepFunctionsExecutionPolicy",  # states:StartExecution on the named state machine
    "StepFunctionsCallbackPolicy",  # states:SendTask* (three named actions) on the named state machine
    "EventBridgePutEventsPolicy",  # events:PutEvents on the named bus
}

# (owner logical id, statement Sid) -> why it may not be scoped further.
JUSTIFIED_STATEMENTS = {
    ("ConversationWorkflowRole", "WorkflowLogDelivery"): "Step Functions log delivery: the logs:*LogDelivery "
    "and resource-policy actions take no resource ARN (AWS documents Resource '*')",
    ("SandboxExecutionRole", "EcrLogin"): "ecr:GetAuthorizationToken takes no resource; the pull itself is "
    "limited to the sandbox image's repository (PullTheSandboxImage)",
    ("SecretsKey", "AccountAdministers"): "the key policy's root statement: the account's IAM policies (the ones "
    "this test checks) decide who uses the key; without it the key cannot be managed. '*' in a key policy is the key",
    ("SandboxTokenKey", "AccountAdministers"): "the same root statement for the sandbox token key; its Deny "
    "statements then refuse Decrypt to every principal but the sandbox task role, and any use without the "
    "purpose sandbox-token (tests/emulated/test_template_secrets.py)",
}

# Managed policy name -> (roles that may carry it, why).
JUSTIFIED_MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole": (
        "*Function",
        "SAM attaches it to every function role: writing the function's own logs (its log group is a "
        "resource of the stack with a retention); it reads nothing",
    ),
    "AWSXrayWriteOnlyAccess": (
        "*Function",
        "SAM attaches it to every traced function and state machine role; X-Ray has no resource-level permissions",
    ),
    "AWSLambdaDynamoDBExecutionRole": (
        "ConversationStreamFunction",
        "SAM attaches it for the conversations stream's event source mapping (the mapping names the stream)",
    ),
    "AWSLambdaSQSQueueExecutionRole": (
        "EventIntakeFunction",
        "SAM attaches it for the CreateConversation queue's event source mapping (the mapping names the queue)",
    ),
    "AmazonAPIGatewayPushToCloudWatchLogs": (
        "ApiGatewayCloudWatchRole",
        "API Gateway's account-wide logging role (one per account and region, shared by every API in it)",
    ),
}

PSEUDO_PARAMETERS = {"AWS::Partition", "AWS::Region", "AWS::AccountId", "AWS::StackName", "AWS::URLSuffix"}
NO_VALUE = {"Ref": "AWS::NoValue"}


@dataclass(frozen=True)
class Statement:
    owner: str  # logical id of the role or the resource that holds the policy
    document: str  # which document of it (a policy name, "KeyPolicy", ...)
    body: dict[str, Any]

    @property
    def sid(self) -> str:
        return str(self.body.get("Sid", ""))

    def where(self) -> str:
        return f"{self.owner} {self.document} {self.sid or json.dumps(self.body)[:200]}"


@pytest.fixture(scope="module")
def deployed() -> dict[str, Any]:
    return translated_template()


def translated_template() -> dict[str, Any]:
    """The template after SAM's transform: what CloudFormation deploys."""
    assert SAM_PYTHON.exists(), ".venv-sam is missing: `make install` creates it"
    result = subprocess.run(
        [str(SAM_PYTHON), str(TRANSLATE), str(ROOT / "template.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin", "SAM_CLI_TELEMETRY": "0"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    translated: dict[str, Any] = json.loads(result.stdout)
    return translated


def refs(value: Any) -> set[str]:
    """The logical ids (resources and parameters) `value` refers to; pseudo parameters excluded."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0] if isinstance(item, list) else str(item).split(".")[0])
            elif key == "Fn::Sub":
                text, variables = (item, {}) if isinstance(item, str) else (item[0], item[1])
                names = {part.split("}")[0].split(".")[0] for part in text.split("${")[1:]}
                found |= {name for name in names if name not in variables}
                found |= refs(variables)
                continue
            found |= refs(item)
    elif isinstance(value, list):
        for item in value:
            found |= refs(item)
    return found - PSEUDO_PARAMETERS


def names_stack_resource(resource: Any) -> bool:
    """The resource refers to something of the template, or is named after the stack the way
    the template names it (`${AWS::StackName}-conversation-workflow`, where a reference would
    make a cycle)."""
    return bool(refs(resource)) or bool(re.search(r"\$\{AWS::StackName\}[-/:][A-Za-z]", json.dumps(resource)))


def _statements_of(owner: str, document: str, policy: Any) -> Iterator[Statement]:
    if isinstance(policy, str):
        policy = json.loads(policy)
    statements = policy.get("Statement", []) if isinstance(policy, dict) else []
    for item in statements if isinstance(statements, list) else [statements]:
        yield from _branches(owner, document, item)


def _branches(owner: str, document: str, item: Any) -> Iterator[Statement]:
    """A statement, or both branches of an Fn::If that holds one (NoValue left out)."""
    if isinstance(item, dict) and "Fn::If" in item:
        for branch in item["Fn::If"][1:]:
            if branch != NO_VALUE:
                yield from _branches(owner, document, branch)
    elif isinstance(item, dict):
        yield Statement(owner, document, item)


def every_statement(resources: dict[str, Any]) -> Iterator[Statement]:
    for logical_id, resource in resources.items():
        kind, properties = resource["Type"], resource.get("Properties") or {}
        if kind == "AWS::IAM::Role":
            for policy in properties.get("Policies") or []:
                yield from _statements_of(logical_id, policy["PolicyName"], policy["PolicyDocument"])
        elif kind in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy"}:
            yield from _statements_of(logical_id, "PolicyDocument", properties["PolicyDocument"])
        elif kind == "AWS::KMS::Key":
            yield from _statements_of(logical_id, "KeyPolicy", properties["KeyPolicy"])
        elif kind == "AWS::Events::EventBus" and "Policy" in properties:
            yield from _statements_of(logical_id, "Policy", properties["Policy"])
        elif kind == "AWS::Events::EventBusPolicy":
            yield from _statements_of(logical_id, "Statement", {"Statement": [properties["Statement"]]})


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict) and "Fn::If" in value:
        return [item for branch in value["Fn::If"][1:] if branch != NO_VALUE for item in as_list(branch)]
    return value if isinstance(value, list) else [value]


def problems_of(statement: Statement) -> list[str]:
    """What makes an Allow statement broader than least privilege (empty: nothing)."""
    body = statement.body
    if body.get("Effect") != "Allow":
        return []  # a Deny may be as broad as it likes
    found = [f"{key} in an Allow" for key in ("NotAction", "NotResource", "NotPrincipal") if key in body]
    actions = [str(action) for action in as_list(body.get("Action"))]
    found += [f"wildcard action {action}" for action in actions if "*" in action]
    scoped_by_condition = bool(refs(body.get("Condition")))
    for resource in as_list(body.get("Resource")):
        if not names_stack_resource(resource) and not scoped_by_condition:
            found.append(f"unscoped resource {json.dumps(resource)}")
        text = json.dumps(resource)
        object_actions = [action for action in actions if re.match(r"s3:(Get|Put|Delete)Object", action)]
        if object_actions and re.search(r"(Arn\}|\}|\]\})/\*\"", text):
            found.append(f"S3 object access to the whole bucket {text}: name a prefix")
    kms_actions = [action for action in actions if action.startswith("kms:")]
    key_policy = statement.document == "KeyPolicy"
    if kms_actions and not key_policy and "kms:EncryptionContext" not in json.dumps(body.get("Condition") or {}):
        found.append(f"{', '.join(kms_actions)} without an encryption-context condition")
    principal = body.get("Principal")
    if principal == "*" and not scoped_by_condition:
        found.append("any principal, with no condition naming a resource or parameter of the stack")
    return found


def test_the_walk_sees_every_role_and_resource_policy(deployed: dict[str, Any]) -> None:
    """The walker reaches what it must, or the test below would pass on nothing."""
    owners = {statement.owner for statement in every_statement(deployed["Resources"])}
    functions = [name for name, spec in load_template()["Resources"].items() if spec["Type"].endswith("::Function")]
    assert {f"{name}Role" for name in functions} <= owners
    assert {"ConversationWorkflowRole", "SandboxExecutionRole", "SecretsKey", "ContextBucketPolicy"} <= owners
    assert {"CreateConversationQueuePolicy", "ConversationEventBus"} <= owners


def test_every_allow_statement_is_least_privilege(deployed: dict[str, Any]) -> None:
    violations = []
    used = set()
    for statement in every_statement(deployed["Resources"]):
        found = problems_of(statement)
        if found and (statement.owner, statement.sid) in JUSTIFIED_STATEMENTS:
            used.add((statement.owner, statement.sid))
            continue
        violations += [f"{statement.where()}: {problem}" for problem in found]
    assert not violations, "scope these, or justify them in JUSTIFIED_STATEMENTS:\n" + "\n".join(violations)
    assert used == set(JUSTIFIED_STATEMENTS), f"stale justifications: {set(JUSTIFIED_STATEMENTS) - used}"


def test_managed_policies_are_only_the_justified_ones(deployed: dict[str, Any]) -> None:
    unjustified, used = [], set()
    serverless = load_template()["Resources"].items()
    sam_roles = {name for name, spec in serverless if spec["Type"].startswith("AWS::Serverless")}
    for logical_id, resource in deployed["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for arn in resource["Properties"].get("ManagedPolicyArns") or []:
            name = re.findall(r"policy/(?:service-role/)?([A-Za-z0-9-]+)", json.dumps(arn))[-1]
            owners, _ = JUSTIFIED_MANAGED_POLICIES.get(name, ("", ""))
            role_of = logical_id.removesuffix("Role")
            sam_made = role_of in sam_roles
            if owners and (role_of == owners or logical_id == owners or (owners == "*Function" and sam_made)):
                used.add(name)
            else:
                unjustified.append(f"{logical_id}: {name}")
    assert not unjustified, "write the statements instead (or justify):\n" + "\n".join(unjustified)
    assert used == set(JUSTIFIED_MANAGED_POLICIES), f"stale: {set(JUSTIFIED_MANAGED_POLICIES) - used}"


def test_only_narrow_sam_policy_templates_are_used() -> None:
    used = {}
    for logical_id, resource in load_template()["Resources"].items():
        if not resource["Type"].startswith("AWS::Serverless::"):
            continue  # an AWS::IAM::Role's Policies are plain documents, walked above
        for policy in (resource.get("Properties") or {}).get("Policies") or []:
            names = [policy] if isinstance(policy, str) else [name for name in policy if name != "Statement"]
            for name in names:
                used.setdefault(name, []).append(logical_id)
    broad = {name: owners for name, owners in used.items() if name not in ALLOWED_SAM_POLICY_TEMPLATES}
    assert not broad, f"write Statements with the calls the code makes instead of: {broad}"


# -- the checker itself: it must refuse what it is there to refuse ----------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"Effect": "Allow", "Action": "dynamodb:*", "Resource": {"Fn::GetAtt": ["T", "Arn"]}}, "wildcard action"),
        ({"Effect": "Allow", "Action": "sqs:SendMessage*", "Resource": {"Fn::GetAtt": ["Q", "Arn"]}}, "wildcard"),
        ({"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"}, "unscoped resource"),
        (
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": "${Bucket.Arn}/*"}},
            "whole bucket",
        ),
        (
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": {"Fn::GetAtt": ["Key", "Arn"]}},
            "encryption-context",
        ),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, "NotAction"),
        ({"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Resource": "*"}, "any principal"),
    ],
)
def test_the_checker_refuses_broad_statements(body: dict[str, Any], problem: str) -> None:
    assert any(problem in found for found in problems_of(Statement("Role", "Policy", body)))


def test_the_checker_accepts_scoped_statements() -> None:
    scoped = [
        {"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": {"Fn::GetAtt": ["T", "Arn"]}},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": "${Bucket.Arn}/conversations/*"}},
        {
            "Effect": "Allow",
            "Action": "ecs:StopTask",
            "Resource": "*",
            "Condition": {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}},
        },
        {
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": {"Fn::GetAtt": ["Key", "Arn"]},
            "Condition": {"Null": {"kms:EncryptionContext:owner": "false"}},
        },
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"},
    ]
    assert [problems_of(Statement("Role", "Policy", body)) for body in scoped] == [[]] * len(scoped)


# -- specific grants the issue names ------------------------------------------------------------


def _function_statements(deployed: dict[str, Any], function: str) -> list[dict[str, Any]]:
    return [s.body for s in every_statement(deployed["Resources"]) if s.owner == f"{function}Role"]


def test_the_sandbox_execution_role_pulls_only_its_image_and_writes_only_its_log_group(
    deployed: dict[str, Any],
) -> None:
    role = deployed["Resources"]["SandboxExecutionRole"]["Properties"]
    assert not role.get("ManagedPolicyArns")
    bodies = {s.sid: s.body for s in every_statement(deployed["Resources"]) if s.owner == "SandboxExecutionRole"}
    assert refs(bodies["SandboxLogGroupOnly"]["Resource"]) == {"SandboxLogGroup"}
    assert refs(bodies["PullTheSandboxImage"]["Resource"]) == {"SandboxImageRepositoryArn"}


def test_the_event_intake_function_can_seal_what_an_event_brings(deployed: dict[str, Any]) -> None:
    """An event with mcp_config is sealed (Encrypt, or a data key past 4 KB) before it is stored."""
    kms = {
        action
        for body in _function_statements(deployed, "EventIntakeFunction")
        if "kms:EncryptionContext:owner" in json.dumps(body.get("Condition"))
        for action in as_list(body["Action"])
    }
    assert {"kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"} <= kms


def test_the_sandbox_security_group_accepts_no_inbound_traffic() -> None:
    resources = load_template()["Resources"]
    group = resources["SandboxSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    assert {rule["CidrIp"] for rule in group["SecurityGroupEgress"]} == {"0.0.0.0/0"}
    assert {rule["FromPort"] for rule in group["SecurityGroupEgress"]} == {443, 80, 22, 53}
    ingress = [spec for spec in resources.values() if spec["Type"] == "AWS::EC2::SecurityGroupIngress"]
    # The one optional opening: the agent-server port, from the operator's own security group.
    assert [(rule["Properties"]["FromPort"], rule["Condition"]) for rule in ingress] == [
        (8000, "AllowAgentServerClients")
    ]
    assert "CidrIp" not in ingress[0]["Properties"]
