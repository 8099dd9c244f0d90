"""Creates the stack's resources on whatever AWS endpoint boto3 points at (moto), from
`template.yaml` itself, so tests and `make dev` never describe a table or a queue twice.

Only the intrinsics the template uses are resolved: Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::If.
Its `Fn::ForEach` loops are expanded first (`load_template`, devstack/language_extensions.py), so
every reader sees the resources CloudFormation creates.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import boto3
from cfnlint.decode import cfn_yaml

from devstack.language_extensions import expand

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as CloudFormation sees it after `AWS::LanguageExtensions`: loops expanded.
    Each caller gets a copy of its own; the file is parsed once per version of it (a parse is
    ~0.09 s of CPU, a copy ~0.01 s, and the tests provision a stack per test)."""
    status = path.stat()
    return copy.deepcopy(_parsed_template(path, status.st_mtime_ns, status.st_size))


@lru_cache(maxsize=4)
def _parsed_template(path: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    return expand(dict(cfn_yaml.load(str(path))))


@dataclass
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    timeout: int
    environment: dict[str, str]
    reserved_concurrency: int | None = None
    schedules: list[str] = field(default_factory=list)  # `Schedule` events: "rate(1 minute)"


@dataclass(frozen=True)
class EventSourceSpec:
    """A function's `Events` entry of type DynamoDB or SQS: an event source mapping."""

    function: str  # logical id
    kind: str  # "DynamoDB" or "SQS"
    source_arn: str  # the stream's or the queue's ARN
    batch_size: int
    report_batch_item_failures: bool
    maximum_retry_attempts: int | None = None  # DynamoDB: None retries until the record expires
    bisect_batch_on_function_error: bool = False  # DynamoDB
    on_failure_arn: str | None = None  # DynamoDB: where a batch that used up its retries is described


@dataclass(frozen=True)
class FunctionRuleSpec:
    """A function's `Events` entry of type EventBridgeRule (or CloudWatchEvent): a rule on a bus
    whose matching events invoke the function."""

    function: str  # logical id
    bus: str  # "default" for the account's default bus (where AWS services publish)
    pattern: dict[str, Any]


@dataclass
class StackResources:
    stack_name: str
    parameters: dict[str, str]
    physical: dict[str, str] = field(default_factory=dict)  # logical id -> Ref value
    attributes: dict[str, str] = field(default_factory=dict)  # "Logical.Attr" -> value
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    event_sources: list[EventSourceSpec] = field(default_factory=list)
    function_rules: list[FunctionRuleSpec] = field(default_factory=list)
    list_parameters: frozenset[str] = frozenset()

    def queue_url(self, queue_arn: str) -> str:
        """The URL of one of the stack's queues, from its ARN."""
        for logical_id, physical in self.physical.items():
            if self.attributes.get(f"{logical_id}.Arn") == queue_arn and physical.startswith("http"):
                return physical
        raise KeyError(queue_arn)

    def ref(self, logical_id: str) -> Any:
        if logical_id in self.parameters:
            value = self.parameters[logical_id]
            return value.split(",") if logical_id in self.list_parameters and value else value
        pseudo = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if logical_id in pseudo:
            return pseudo[logical_id]
        return self.physical[logical_id]


class TemplateResolver:
    def __init__(self, template: dict[str, Any], resources: StackResources) -> None:
        self._template = template
        self._resources = resources

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._resources.ref(argument)
            if key == "Fn::GetAtt":
                logical, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self._resources.attributes[f"{logical}.{attribute}"]
            if key == "Fn::Sub":
                return self._sub(argument)
            if key == "Fn::Join":
                separator, items = argument
                resolved = self.resolve(items)
                resolved = resolved if isinstance(resolved, list) else [resolved]
                flat = [str(x) for item in resolved for x in (item if isinstance(item, list) else [item])]
                return separator.join(flat)
            if key == "Fn::If":
                condition, when_true, when_false = argument
                return self.resolve(when_true if self.condition(condition) else when_false)
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value

    def condition(self, name: str) -> bool:
        """Whether the template's condition `name` holds for these parameters."""
        return self._holds(self._template.get("Conditions", {})[name])

    def _holds(self, condition: dict[str, Any]) -> bool:
        ((key, argument),) = condition.items()
        if key == "Fn::Equals":
            left, right = (self.resolve(item) for item in argument)
            return bool(left == right)
        if key == "Condition":
            return self.condition(argument)
        if key == "Fn::Not":
            return not self._holds(argument[0])
        if key == "Fn::And":
            return all(self._holds(item) for item in argument)
        if key == "Fn::Or":
            return any(self._holds(item) for item in argument)
        raise NotImplementedError(key)

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name:
                return str(self._resources.attributes[name])
            return str(self._resources.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)


def _parameters(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
    values = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    values.update(overrides)
    return values


def _resource_name(stack_name: str, logical_id: str) -> str:
    return f"{stack_name}-{logical_id}"


def provision(
    stack_name: str = "local",
    parameter_overrides: dict[str, str] | None = None,
    *,
    session: boto3.Session | None = None,
) -> StackResources:
    """Create every data, queue, key, cluster, workflow and event resource of the template."""
    session = session or boto3.Session(region_name=REGION)
    template = load_template()
    resources = StackResources(stack_name, _parameters(template, parameter_overrides or {}))
    resources.list_parameters = frozenset(
        name for name, spec in template.get("Parameters", {}).items() if spec.get("Type") == "CommaDelimitedList"
    )
    if not resources.parameters.get("SandboxSubnetIds"):
        subnet, security_group = _create_sandbox_network(session)
        resources.parameters["SandboxSubnetIds"] = subnet
        resources.parameters["SandboxSecurityGroupIds"] = security_group
    resolver = TemplateResolver(template, resources)
    definitions = template["Resources"]
    _name_functions(definitions, resources)
    creators = {
        "AWS::KMS::Key": _create_kms_key,
        "AWS::DynamoDB::Table": _create_table,
        "AWS::S3::Bucket": _create_bucket,
        "AWS::SQS::Queue": _create_queue,
        "AWS::ECS::Cluster": _create_cluster,
        "AWS::IAM::Role": _create_role_arn,
        "AWS::Logs::LogGroup": _create_log_group,
    }
    for logical_id, spec in definitions.items():
        creator = creators.get(spec["Type"])
        if creator:
            creator(session, logical_id, spec.get("Properties", {}), resources, resolver)
    # Resources whose properties refer to the ones above.
    for logical_id, spec in definitions.items():
        if spec["Type"] == "AWS::ECS::TaskDefinition":
            _create_task_definition(session, logical_id, spec["Properties"], resources, resolver)
        if spec["Type"] == "AWS::Serverless::Api":
            api_id = "localapi"
            resources.physical[logical_id] = api_id
    for logical_id, spec in definitions.items():
        if spec["Type"] == "AWS::Serverless::StateMachine":
            _create_state_machine(session, logical_id, spec["Properties"], resources, resolver)
    _set_redrive_policies(session, definitions, resources, resolver)
    provision_events(session, resources, template)
    _resolve_function_environments(template, resources, resolver)
    _resolve_event_sources(template, resources, resolver)
    return resources


def _create_sandbox_network(session: Any) -> tuple[str, str]:
    """The VPC the operator would pass as parameters: one subnet, one egress-only group."""
    ec2 = session.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="sandbox", Description="sandbox tasks", VpcId=vpc)["GroupId"]
    return subnet, group


def _name_functions(definitions: dict[str, Any], resources: StackResources) -> None:
    for logical_id, spec in definitions.items():
        if spec["Type"] != "AWS::Serverless::Function":
            continue
        name = _resource_name(resources.stack_name, logical_id)
        arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
        resources.physical[logical_id] = name
        resources.attributes[f"{logical_id}.Arn"] = arn


def _resolve_function_environments(
    template: dict[str, Any], resources: StackResources, resolver: TemplateResolver
) -> None:
    globals_ = template.get("Globals", {}).get("Function", {})
    global_env = globals_.get("Environment", {}).get("Variables", {})
    for logical_id, spec in template["Resources"].items():
        if spec["Type"] != "AWS::Serverless::Function":
            continue
        properties = spec["Properties"]
        env_spec = {**global_env, **properties.get("Environment", {}).get("Variables", {})}
        environment = {key: str(resolver.resolve(value)) for key, value in env_spec.items()}
        handler_module, handler_function = properties["Handler"].rsplit(".", 1)
        resources.functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            name=resources.physical[logical_id],
            arn=resources.attributes[f"{logical_id}.Arn"],
            code_dir=ROOT / properties["CodeUri"],
            handler=f"{handler_module}.{handler_function}",
            timeout=int(properties.get("Timeout", globals_.get("Timeout", 3))),
            environment=environment,
            reserved_concurrency=(
                int(properties["ReservedConcurrentExecutions"])
                if "ReservedConcurrentExecutions" in properties
                else None
            ),
            schedules=[
                str(event["Properties"]["Schedule"])
                for event in (properties.get("Events") or {}).values()
                if event.get("Type") == "Schedule"
            ],
        )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _create_kms_key(
    session: Any, logical_id: str, properties: dict[str, Any], resources: StackResources, _: Any
) -> None:
    key = session.client("kms").create_key(Description=properties.get("Description", logical_id))["KeyMetadata"]
    resources.physical[logical_id] = key["KeyId"]
    resources.attributes[f"{logical_id}.Arn"] = key["Arn"]


def _create_table(session: Any, logical_id: str, properties: dict[str, Any], resources: StackResources, _: Any) -> None:
    name = _resource_name(resources.stack_name, logical_id)
    request: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if "GlobalSecondaryIndexes" in properties:
        request["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
    if "StreamSpecification" in properties:
        request["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": properties["StreamSpecification"]["StreamViewType"],
        }
    client = session.client("dynamodb")
    table = client.create_table(**request)["TableDescription"]
    if ttl := properties.get("TimeToLiveSpecification"):
        client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    resources.physical[logical_id] = name
    resources.attributes[f"{logical_id}.Arn"] = table["TableArn"]
    if "LatestStreamArn" in table:
        resources.attributes[f"{logical_id}.StreamArn"] = table["LatestStreamArn"]


def _create_bucket(
    session: Any, logical_id: str, properties: dict[str, Any], resources: StackResources, resolver: Any
) -> None:
    name = _resource_name(resources.stack_name, logical_id).lower()
    s3 = session.client("s3")
    s3.create_bucket(Bucket=name)
    rules = resolver.resolve((properties.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration") or [])
    if rules:  # the default encryption (the stack's key), as CloudFormation sets it
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                        "BucketKeyEnabled": bool(rule.get("BucketKeyEnabled", False)),
                    }
                    for rule in rules
                ]
            },
        )
    resources.physical[logical_id] = name
    resources.attributes[f"{logical_id}.Arn"] = f"arn:aws:s3:::{name}"


# Queue properties moto keeps as attributes (RedrivePolicy is set once every queue exists).
_QUEUE_ATTRIBUTES = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds")


def _create_queue(
    session: Any, logical_id: str, properties: dict[str, Any], resources: StackResources, resolver: Any
) -> None:
    name = _resource_name(resources.stack_name, logical_id)
    client = session.client("sqs")
    attributes = {key: str(resolver.resolve(properties[key])) for key in _QUEUE_ATTRIBUTES if key in properties}
    url = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    resources.physical[logical_id] = url
    resources.attributes[f"{logical_id}.Arn"] = arn
    resources.attributes[f"{logical_id}.QueueName"] = name


def _set_redrive_policies(
    session: Any, definitions: dict[str, Any], resources: StackResources, resolver: TemplateResolver
) -> None:
    """A queue's RedrivePolicy names its dead-letter queue, which the template may define later."""
    client = session.client("sqs")
    for logical_id, spec in definitions.items():
        policy = spec.get("Properties", {}).get("RedrivePolicy") if spec["Type"] == "AWS::SQS::Queue" else None
        if policy:
            client.set_queue_attributes(
                QueueUrl=resources.physical[logical_id],
                Attributes={"RedrivePolicy": json.dumps(resolver.resolve(policy))},
            )


def provision_events(session: Any, resources: StackResources, template: dict[str, Any] | None = None) -> None:
    """The template's EventBridge buses and rules (patterns and targets resolved), and the queue
    policies that let the rules send (moto does not enforce them; kept for a faithful copy)."""
    template = template or load_template()
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
        name = str(properties.get("Name") or _resource_name(resources.stack_name, logical_id))
        bus = str(properties.get("EventBusName") or "default")
        rule: dict[str, Any] = {"Name": name, "EventBusName": bus, "State": properties.get("State", "ENABLED")}
        if "EventPattern" in properties:
            rule["EventPattern"] = json.dumps(properties["EventPattern"])
        if "ScheduleExpression" in properties:
            rule["ScheduleExpression"] = properties["ScheduleExpression"]
        if "Description" in properties:
            rule["Description"] = properties["Description"]
        arn = events.put_rule(**rule)["RuleArn"]
        resources.physical[logical_id] = name if bus == "default" else f"{bus}|{name}"
        resources.attributes[f"{logical_id}.Arn"] = arn
        targets = [
            {key: target[key] for key in ("Id", "Arn", "Input", "InputPath") if key in target}
            for target in properties.get("Targets", [])
        ]
        if targets:
            events.put_targets(Rule=name, EventBusName=bus, Targets=targets)
    sqs = session.client("sqs")
    for spec in definitions.values():
        if spec["Type"] != "AWS::SQS::QueuePolicy":
            continue
        properties = resolver.resolve(spec["Properties"])
        for url in properties["Queues"]:
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(properties["PolicyDocument"])})


def _resolve_event_sources(template: dict[str, Any], resources: StackResources, resolver: TemplateResolver) -> None:
    """The functions' stream and queue event source mappings (SAM `Events` of type DynamoDB, SQS)
    and their EventBridge rules (EventBridgeRule, CloudWatchEvent)."""
    for logical_id, spec in template["Resources"].items():
        if spec["Type"] != "AWS::Serverless::Function":
            continue
        for event in (spec["Properties"].get("Events") or {}).values():
            kind = event.get("Type")
            if kind in {"EventBridgeRule", "CloudWatchEvent"} and "Pattern" in event.get("Properties", {}):
                properties = resolver.resolve(event["Properties"])
                bus = str(properties.get("EventBusName") or "default")
                resources.function_rules.append(FunctionRuleSpec(logical_id, bus, dict(properties["Pattern"])))
                continue
            if kind not in {"DynamoDB", "SQS"}:
                continue
            properties = resolver.resolve(event.get("Properties", {}))
            on_failure = ((properties.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
            retries = properties.get("MaximumRetryAttempts")
            resources.event_sources.append(
                EventSourceSpec(
                    function=logical_id,
                    kind=kind,
                    source_arn=str(properties["Stream"] if kind == "DynamoDB" else properties["Queue"]),
                    batch_size=int(properties.get("BatchSize", 100 if kind == "DynamoDB" else 10)),
                    report_batch_item_failures="ReportBatchItemFailures"
                    in (properties.get("FunctionResponseTypes") or []),
                    maximum_retry_attempts=None if retries in (None, -1) else int(retries),
                    bisect_batch_on_function_error=bool(properties.get("BisectBatchOnFunctionError", False)),
                    on_failure_arn=str(on_failure) if on_failure else None,
                )
            )


def _create_cluster(session: Any, logical_id: str, _: dict[str, Any], resources: StackResources, __: Any) -> None:
    name = _resource_name(resources.stack_name, logical_id)
    cluster = session.client("ecs").create_cluster(clusterName=name)["cluster"]
    resources.physical[logical_id] = name
    resources.attributes[f"{logical_id}.Arn"] = cluster["clusterArn"]


def _create_role_arn(session: Any, logical_id: str, _: dict[str, Any], resources: StackResources, __: Any) -> None:
    name = _resource_name(resources.stack_name, logical_id)
    arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{name}"
    resources.physical[logical_id] = name
    resources.attributes[f"{logical_id}.Arn"] = arn


def _create_log_group(
    session: Any, logical_id: str, properties: dict[str, Any], resources: StackResources, resolver: Any
) -> None:
    name = str(resolver.resolve(properties.get("LogGroupName", f"/local/{resources.stack_name}/{logical_id}")))
    session.client("logs").create_log_group(logGroupName=name)
    resources.physical[logical_id] = name
    resources.attributes[f"{logical_id}.Arn"] = f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{name}:*"


def _create_task_definition(
    session: Any, logical_id: str, properties: dict[str, Any], resources: StackResources, resolver: TemplateResolver
) -> None:
    resolved = resolver.resolve(properties)
    containers = [
        {
            "name": container["Name"],
            "image": container["Image"],
            "essential": container.get("Essential", True),
            "memory": int(container.get("Memory", resolved.get("Memory", 2048))),
            "environment": [
                {"name": item["Name"], "value": str(item["Value"])} for item in container.get("Environment", [])
            ],
            "portMappings": [
                {"containerPort": int(port["ContainerPort"])} for port in container.get("PortMappings", [])
            ],
        }
        for container in resolved["ContainerDefinitions"]
    ]
    family = _resource_name(resources.stack_name, logical_id)
    definition = session.client("ecs").register_task_definition(
        family=family,
        networkMode=resolved.get("NetworkMode", "awsvpc"),
        requiresCompatibilities=resolved.get("RequiresCompatibilities", ["FARGATE"]),
        cpu=str(resolved.get("Cpu", "1024")),
        memory=str(resolved.get("Memory", "2048")),
        executionRoleArn=resolved.get("ExecutionRoleArn", ""),
        taskRoleArn=resolved.get("TaskRoleArn", ""),
        containerDefinitions=containers,
    )["taskDefinition"]
    resources.physical[logical_id] = definition["taskDefinitionArn"]


def state_machine_definition(properties: dict[str, Any], resolver: TemplateResolver) -> str:
    text = (ROOT / properties["DefinitionUri"]).read_text()
    substitutions = {key: str(resolver.resolve(value)) for key, value in properties["DefinitionSubstitutions"].items()}
    definition = re.sub(r"\$\{(\w+)\}", lambda match: substitutions[match.group(1)], text)
    json.loads(definition)  # fail here, loudly, on a definition that is not JSON after substitution
    return definition


def _create_state_machine(
    session: Any, logical_id: str, properties: dict[str, Any], resources: StackResources, resolver: TemplateResolver
) -> None:
    name = str(resolver.resolve(properties.get("Name", _resource_name(resources.stack_name, logical_id))))
    arn = session.client("stepfunctions").create_state_machine(
        name=name,
        definition=state_machine_definition(properties, resolver),
        roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{name}-role",
        type=properties.get("Type", "STANDARD"),
    )["stateMachineArn"]
    resources.physical[logical_id] = arn
    resources.attributes[f"{logical_id}.Name"] = name
