"""The template keeps secrets out of traces and out of reach (issue 10): X-Ray records no
handler response or error, only the sandbox channel may answer a workflow's task token, and the
sandbox token key opens only for the sandbox task role."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.template_resources import load_template

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
SEND_TASK_ACTIONS = {"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"}


def policy_statements(logical_id: str) -> list[dict[str, Any]]:
    resource = RESOURCES[logical_id]
    properties = resource.get("Properties", {})
    if resource["Type"] == "AWS::IAM::Policy":
        return list(properties["PolicyDocument"]["Statement"])
    if resource["Type"] == "AWS::IAM::Role":
        return [item for policy in properties.get("Policies", []) for item in policy["PolicyDocument"]["Statement"]]
    return [item for policy in properties.get("Policies", []) if "Statement" in policy for item in policy["Statement"]]


def actions_of(statement: dict[str, Any]) -> set[str]:
    action = statement.get("Action", [])
    return {action} if isinstance(action, str) else set(action)


def principals() -> list[str]:
    kinds = {"AWS::Serverless::Function", "AWS::Serverless::StateMachine", "AWS::IAM::Role", "AWS::IAM::Policy"}
    return [logical_id for logical_id, resource in RESOURCES.items() if resource["Type"] in kinds]


def test_xray_records_no_handler_response_or_error() -> None:
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
    assert variables["POWERTOOLS_TRACER_CAPTURE_ERROR"] == "false"
    for logical_id, resource in RESOURCES.items():
        if resource["Type"] == "AWS::Serverless::Function":
            own = resource["Properties"].get("Environment", {}).get("Variables", {})
            assert own.get("POWERTOOLS_TRACER_CAPTURE_RESPONSE", "false") == "false", logical_id
            assert own.get("POWERTOOLS_TRACER_CAPTURE_ERROR", "false") == "false", logical_id


def test_only_the_sandbox_channel_may_answer_a_workflows_task_token() -> None:
    """The task token is on the conversation's item (and in the execution history, by Step
    Functions' design); it resumes a workflow only for a principal allowed states:SendTask*."""
    allowed = {
        logical_id
        for logical_id in principals()
        for statement in policy_statements(logical_id)
        if statement.get("Effect") == "Allow"
        and (actions_of(statement) & SEND_TASK_ACTIONS or any("*" in a for a in actions_of(statement) if "states" in a))
    }
    assert allowed == {"SandboxApiFunction", "SandboxWatchFunction"}


def test_only_the_sandbox_task_role_decrypts_the_sandbox_token_key() -> None:
    key_policy = RESOURCES["SandboxTokenKey"]["Properties"]["KeyPolicy"]["Statement"]
    deny = next(item for item in key_policy if item["Sid"] == "OnlyTheSandboxTaskRoleDecrypts")
    assert deny["Effect"] == "Deny" and deny["Action"] == "kms:Decrypt"
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["SandboxTaskRole", "Arn"]}}}
    purpose = next(item for item in key_policy if item["Sid"] == "OnlySandboxTokensAreSealed")
    assert purpose["Effect"] == "Deny"
    assert purpose["Condition"] == {"StringNotEquals": {"kms:EncryptionContext:purpose": "sandbox-token"}}

    task_role = [
        statement
        for logical_id in principals()
        if logical_id == "SandboxTaskRole"
        or RESOURCES[logical_id].get("Properties", {}).get("Roles") == [{"Ref": "SandboxTaskRole"}]
        for statement in policy_statements(logical_id)
    ]
    assert task_role == [
        {
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": {"Fn::GetAtt": ["SandboxTokenKey", "Arn"]},
            "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "sandbox-token"}},
        }
    ]
    assert not RESOURCES["SandboxTaskRole"]["Properties"].get("ManagedPolicyArns")


@pytest.mark.parametrize("logical_id", [name for name in principals() if name not in {"SandboxTaskRolePolicy"}])
def test_the_launch_step_and_the_pool_reconciler_alone_seal_and_nobody_else_touches_the_token_key(
    logical_id: str,
) -> None:
    """The launch step seals sandbox tokens, the reconciler pool credentials (both for RunTask)."""
    uses = [statement for statement in policy_statements(logical_id) if "SandboxTokenKey" in json.dumps(statement)]
    if logical_id in {"LaunchSandboxFunction", "PoolReconcilerFunction"}:
        assert uses == [
            {
                "Effect": "Allow",
                "Action": "kms:Encrypt",
                "Resource": {"Fn::GetAtt": ["SandboxTokenKey", "Arn"]},
                "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "sandbox-token"}},
            }
        ]
    else:
        assert uses == []
