"""The sandbox's Fargate task as the template wires it (issue 13's cold path): its size and CPU
architecture are parameters the task definition uses, and the VPC endpoints a cold start's pull
and logs need exist only when the operator asks for them, reachable from the sandboxes alone."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.template_resources import StackResources, TemplateResolver, load_template

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
PARAMETERS: dict[str, Any] = TEMPLATE["Parameters"]
TASK = RESOURCES["SandboxTaskDefinition"]["Properties"]
INTERFACE_ENDPOINTS = {
    "SandboxEndpointecrapi": "ecr.api",
    "SandboxEndpointecrdkr": "ecr.dkr",
    "SandboxEndpointlogs": "logs",
}
VPC = {"SandboxVpcId": "vpc-1", "SandboxSubnetIds": "subnet-1,subnet-2"}


def _deployed(**overrides: str) -> set[str]:
    """The logical ids CloudFormation creates with these parameter values (their Condition holds)."""
    values = {name: str(spec.get("Default", "")) for name, spec in PARAMETERS.items()} | overrides
    stack = StackResources("test", values)
    stack.list_parameters = frozenset(n for n, spec in PARAMETERS.items() if spec["Type"] == "CommaDelimitedList")
    resolver = TemplateResolver(TEMPLATE, stack)
    return {
        name for name, spec in RESOURCES.items() if "Condition" not in spec or resolver.condition(spec["Condition"])
    }


def test_the_task_size_and_architecture_are_parameters() -> None:
    assert TASK["Cpu"] == {"Ref": "SandboxTaskCpu"}
    assert TASK["Memory"] == {"Ref": "SandboxTaskMemory"}
    assert TASK["RuntimePlatform"]["CpuArchitecture"] == {"Ref": "SandboxCpuArchitecture"}
    (container,) = TASK["ContainerDefinitions"]
    assert "Memory" not in container  # the container gets the task's memory, never a second figure
    # Today's sizes stay the defaults: 2 vCPU, 4 GB, x86_64; Graviton is one parameter away.
    assert PARAMETERS["SandboxTaskCpu"]["Default"] == "2048"
    assert PARAMETERS["SandboxTaskMemory"]["Default"] == "4096"
    assert set(PARAMETERS["SandboxCpuArchitecture"]["AllowedValues"]) == {"X86_64", "ARM64"}


def test_the_local_stack_registers_the_task_at_the_size_it_is_given() -> None:
    stack = StackResources(
        "test", {"SandboxTaskCpu": "4096", "SandboxTaskMemory": "8192", "SandboxCpuArchitecture": "ARM64"}
    )
    resolved = TemplateResolver(TEMPLATE, stack).resolve(
        {key: TASK[key] for key in ("Cpu", "Memory", "RuntimePlatform")}
    )
    assert resolved == {
        "Cpu": "4096",
        "Memory": "8192",
        "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
    }


def test_no_endpoint_unless_asked_for() -> None:
    endpoints = {name for name, spec in RESOURCES.items() if spec["Type"] == "AWS::EC2::VPCEndpoint"}
    assert endpoints == set(INTERFACE_ENDPOINTS) | {"SandboxEndpoints3"}
    assert not _deployed() & (endpoints | {"SandboxEndpointSecurityGroup"})
    assert not _deployed(**VPC) & endpoints  # a VPC alone: the operator may have endpoints already
    # Asked for without a VPC the stack creates no group of its own to admit: none either.
    assert not _deployed(SandboxVpcEndpoints="true") & endpoints


@pytest.mark.parametrize(("route_tables", "with_s3"), [("", False), ("rtb-1,rtb-2", True)])
def test_asked_for_the_endpoints_are_created_in_the_sandboxes_subnets(route_tables: str, with_s3: bool) -> None:
    deployed = _deployed(**VPC, SandboxVpcEndpoints="true", SandboxRouteTableIds=route_tables)
    assert set(INTERFACE_ENDPOINTS) | {"SandboxEndpointSecurityGroup"} <= deployed
    assert ("SandboxEndpoints3" in deployed) is with_s3
    for name, service in INTERFACE_ENDPOINTS.items():
        properties = RESOURCES[name]["Properties"]
        assert properties["VpcEndpointType"] == "Interface"
        assert properties["ServiceName"] == {"Fn::Sub": f"com.amazonaws.${{AWS::Region}}.{service}"}
        assert properties["SubnetIds"] == {"Ref": "SandboxSubnetIds"}
        assert properties["SecurityGroupIds"] == [{"Ref": "SandboxEndpointSecurityGroup"}]
        assert properties["PrivateDnsEnabled"] is True  # the SDKs' usual host names resolve to it
    s3 = RESOURCES["SandboxEndpoints3"]["Properties"]
    assert s3["VpcEndpointType"] == "Gateway"
    assert s3["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"}
    assert s3["RouteTableIds"] == {"Ref": "SandboxRouteTableIds"}


def test_only_the_sandboxes_reach_the_endpoints_and_only_on_https() -> None:
    group = RESOURCES["SandboxEndpointSecurityGroup"]["Properties"]
    (ingress,) = group["SecurityGroupIngress"]
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("tcp", 443, 443)
    assert ingress["SourceSecurityGroupId"] == {"Ref": "SandboxSecurityGroup"}
    assert "CidrIp" not in ingress
    (egress,) = group["SecurityGroupEgress"]  # replaces the default allow-all: an endpoint only answers
    assert egress["CidrIp"] == "127.0.0.1/32"


def _evaluate(assertion: Any, values: dict[str, str]) -> Any:
    """A rule's assertion for these parameter values (the functions the template's rules use)."""
    ((function, argument),) = assertion.items()
    if function == "Ref":
        return values[argument]
    resolved = [_evaluate(item, values) if isinstance(item, dict) else item for item in argument]
    if function == "Fn::Or":
        return any(resolved)
    if function == "Fn::And":
        return all(resolved)
    if function == "Fn::Equals":
        return bool(resolved[0] == resolved[1])
    if function == "Fn::Contains":
        return resolved[1] in resolved[0]
    raise NotImplementedError(function)


@pytest.mark.parametrize(
    ("cpu", "memory", "runs"),
    [
        ("2048", "4096", True),  # the defaults
        ("1024", "8192", True),
        ("1024", "16384", False),  # more memory than 1 vCPU may have
        ("4096", "30720", True),
        ("8192", "18432", False),  # 8 vCPU take memory in 4 GB steps
        ("16384", "122880", True),
        ("2048", "3072", False),
    ],
)
def test_a_task_size_fargate_does_not_run_is_refused_before_deploying(cpu: str, memory: str, runs: bool) -> None:
    (assertion,) = TEMPLATE["Rules"]["SandboxTaskSizeIsOneFargateRuns"]["Assertions"]
    assert _evaluate(assertion["Assert"], {"SandboxTaskCpu": cpu, "SandboxTaskMemory": memory}) is runs
