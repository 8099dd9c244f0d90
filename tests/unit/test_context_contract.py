"""The sandbox context is defined twice: by the service, which serves it at GET
/sandbox/v1/context (`conversation_service.models.context.SandboxContext`, pydantic), and by the
sandbox, which parses it (`sandbox/openhands_sandbox/context.py`, dataclasses and `from_json`).
Nothing shares code between the two (the sandbox image carries no service code), so this test
holds them to one contract, both ways:

- the same fields at every level (a field one side drops or adds fails here);
- every context the service can serve parses in the sandbox, with the same values;
- what the sandbox requires (refuses when null or missing) the service always sends: required
  and not nullable in the service's JSON schema;
- what the service may leave null the sandbox accepts as null.

Neither side carries a version field; the field sets compared here are the contract.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from conversation_service.models import context as service
from pydantic import BaseModel, create_model

SANDBOX_DIR = Path(__file__).resolve().parents[2] / "sandbox"
if str(SANDBOX_DIR) not in sys.path:
    sys.path.insert(0, str(SANDBOX_DIR))

from openhands_sandbox import context as sandbox  # noqa: E402

# (service model, sandbox dataclass, where it sits in the context: () is the context itself)
PAIRS: list[tuple[type[BaseModel], type[Any], tuple[str, ...]]] = [
    (service.SandboxContext, sandbox.ConversationContext, ()),
    (service.SandboxRepository, sandbox.RepositoryContext, ("repository",)),
    (service.AgentConfig, sandbox.AgentContext, ("agent",)),
    (service.SandboxLLM, sandbox.LlmContext, ("llm",)),
    (service.FirstMessage, sandbox.FirstMessage, ("first_message",)),
]

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def full_context(**overrides: Any) -> service.SandboxContext:
    """A context with every field the service can set, set (secrets are test values)."""
    values: dict[str, Any] = {
        "conversation_id": "c" * 32,
        "repository": service.SandboxRepository(
            clone_url="https://git.example/owner/repo.git",
            name="repo",
            branch="feature/login",
            commit=COMMIT,
            username="x-access-token",
            password="ghp_TEST_TOKEN_0123456789abcdef",
        ),
        "workspace_branch": "openhands-workspace-0123abcd",
        "agent": service.AgentConfig(
            agent="CodeActAgent", max_iterations=50, confirmation_mode=True, security_analyzer="llm"
        ),
        "llm": service.SandboxLLM(model="anthropic/claude-sonnet-4", api_key="sk-test-key", base_url="https://llm/"),
        "session_api_key": "session-key-0123456789abcdef",
        "first_message": service.FirstMessage(text="fix the bug", image_urls=["https://img.example/1.png"]),
        "conversation_instructions": "be brief",
        "mcp_config": {"fs": {"command": "mcp-fs", "args": [], "env": {"TOKEN": "mcp-secret"}}},  # agent-server shape
        "setup_script_timeout_seconds": 600,
    }
    return service.SandboxContext(**{**values, **overrides})


def served(context: service.SandboxContext) -> dict[str, Any]:
    """The JSON the sandbox API answers with (Powertools serialises the model in JSON mode)."""
    return context.model_dump(mode="json")


def _at(document: dict[str, Any], where: tuple[str, ...]) -> dict[str, Any]:
    for key in where:
        document = document[key]
    return document


def _nullable(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return any(option.get("type") == "null" for option in options)


def contract_problems(pairs: list[tuple[type[BaseModel], type[Any], tuple[str, ...]]]) -> list[str]:
    """Every disagreement between the two definitions, described; [] when they agree."""
    problems: list[str] = []
    for model, parsed_class, where in pairs:
        name = ".".join(where) or "context"
        service_fields = set(model.model_fields)
        sandbox_fields = {field.name for field in dataclasses.fields(parsed_class)}
        for missing in sorted(service_fields - sandbox_fields):
            problems.append(f"{name}.{missing}: served by the service, unknown to the sandbox")
        for missing in sorted(sandbox_fields - service_fields):
            problems.append(f"{name}.{missing}: read by the sandbox, never served by the service")
        schema = model.model_json_schema()
        required = set(schema.get("required", []))
        properties = schema["properties"]
        for field_name in sorted(service_fields & sandbox_fields):
            service_always_sends = field_name in required and not _nullable(properties[field_name])
            for absent in ("null", "missing"):
                candidate = served(full_context())
                holder = _at(candidate, where)
                if absent == "null":
                    holder[field_name] = None
                else:
                    del holder[field_name]
                try:
                    sandbox.ConversationContext.from_json(candidate)
                    sandbox_requires = False
                except sandbox.ContextError:
                    sandbox_requires = True
                if sandbox_requires and not service_always_sends:
                    problems.append(f"{name}.{field_name}: the sandbox refuses it {absent}, the service may send it so")
    return problems


def test_the_two_definitions_agree() -> None:
    assert contract_problems(PAIRS) == []


def test_every_served_field_reaches_the_sandbox_with_its_value() -> None:
    context = full_context()
    parsed = sandbox.ConversationContext.from_json(served(context))
    assert parsed.conversation_id == context.conversation_id
    assert parsed.workspace_branch == context.workspace_branch
    assert parsed.session_api_key == context.session_api_key
    assert parsed.conversation_instructions == context.conversation_instructions
    assert parsed.mcp_config == context.mcp_config
    assert parsed.setup_script_timeout_seconds == context.setup_script_timeout_seconds
    assert dataclasses.asdict(parsed.agent) == context.agent.model_dump()
    assert dataclasses.asdict(parsed.llm) == context.llm.model_dump()
    assert context.repository is not None and parsed.repository is not None
    assert dataclasses.asdict(parsed.repository) == context.repository.model_dump()
    assert context.first_message is not None and parsed.first_message is not None
    assert parsed.first_message.text == context.first_message.text
    assert list(parsed.first_message.image_urls) == context.first_message.image_urls
    # The values the sandbox must keep out of logs are the service's secrets.
    assert set(parsed.secrets()) >= {"sk-test-key", "session-key-0123456789abcdef", "mcp-secret"}


def test_the_smallest_context_the_service_serves_parses() -> None:
    context = full_context(
        repository=None,
        workspace_branch=None,
        first_message=None,
        conversation_instructions=None,
        mcp_config={},
        llm=service.SandboxLLM(model="m"),
        agent=service.AgentConfig(agent="CodeActAgent", max_iterations=1, confirmation_mode=False),
    )
    parsed = sandbox.ConversationContext.from_json(served(context))
    assert (parsed.repository, parsed.first_message, parsed.llm.api_key) == (None, None, None)


def _without(model: type[BaseModel], field_name: str) -> type[BaseModel]:
    fields: dict[str, Any] = {
        name: (info.annotation, info) for name, info in model.model_fields.items() if name != field_name
    }
    return create_model(model.__name__, **fields)


def _dataclass_without(parsed_class: type[Any], field_name: str) -> type[Any]:
    hints = typing.get_type_hints(parsed_class)
    kept = [(field.name, hints[field.name]) for field in dataclasses.fields(parsed_class) if field.name != field_name]
    return dataclasses.make_dataclass(parsed_class.__name__, kept)


@pytest.mark.parametrize("field_name", ["workspace_branch", "setup_script_timeout_seconds"])
def test_a_field_dropped_by_either_side_is_a_disagreement(field_name: str) -> None:
    service_side = [(_without(PAIRS[0][0], field_name), *PAIRS[0][1:]), *PAIRS[1:]]
    assert contract_problems(service_side) == [
        f"context.{field_name}: read by the sandbox, never served by the service"
    ]
    sandbox_side = [(PAIRS[0][0], _dataclass_without(PAIRS[0][1], field_name), ()), *PAIRS[1:]]
    assert contract_problems(sandbox_side) == [f"context.{field_name}: served by the service, unknown to the sandbox"]


def test_a_field_the_service_may_leave_null_but_the_sandbox_requires_is_a_disagreement() -> None:
    nullable_llm = create_model(
        "SandboxLLM", model=(str | None, None), api_key=(str | None, None), base_url=(str | None, None)
    )
    pairs = [PAIRS[0], PAIRS[1], PAIRS[2], (nullable_llm, sandbox.LlmContext, ("llm",)), PAIRS[4]]
    problems = contract_problems(pairs)
    assert "llm.model: the sandbox refuses it null, the service may send it so" in problems
