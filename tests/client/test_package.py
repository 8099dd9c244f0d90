"""The package as installed, and its agreement with the API document (docs/openapi.json)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from openhands_conversations_client import (
    Accepted,
    AgentEvent,
    AgentEventPage,
    ChangedFile,
    Conversation,
    ConversationAction,
    ConversationsClient,
    ConversationSummary,
    Quota,
    Settings,
    Workspace,
    __version__,
)

from tests.client.conftest import installed_convo

ROOT = Path(__file__).resolve().parents[2]


def api_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / "docs" / "openapi.json").read_text())
    return document


def schema(name: str) -> dict[str, Any]:
    schemas = api_document()["components"]["schemas"]
    if name not in schemas and name in LIFECYCLE_SCHEMAS:
        pytest.skip(f"docs/openapi.json does not document {name} yet: regenerate it (make openapi)")
    found: dict[str, Any] = schemas[name]
    return found


LIFECYCLE_SCHEMAS = {"ConversationSummary", "ConversationActionResponse", "QuotaView"}


def fields_of(model: type) -> set[str]:
    return {item.name for item in dataclasses.fields(model)} - {"raw"}


def parameters_of(method: Any) -> set[str]:
    return set(inspect.signature(method).parameters) - {"self"}


def test_version_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
    assert project["scripts"]["convo"] == "openhands_conversations_client.cli:main"


def test_console_script_is_installed_and_runs() -> None:
    completed = subprocess.run(
        [str(installed_convo()), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert (completed.returncode, completed.stdout) == (0, f"convo {__version__}\n")


def test_create_takes_exactly_the_request_fields_of_the_spec() -> None:
    spec_fields = set(schema("CreateConversationRequest")["properties"])
    assert parameters_of(ConversationsClient.create) - {"idempotency_key"} == spec_fields


def test_conversation_has_every_field_of_the_view() -> None:
    assert fields_of(Conversation) == set(schema("ConversationView")["properties"])


def test_settings_match_the_view_and_the_update() -> None:
    assert fields_of(Settings) == set(schema("SettingsView")["properties"])
    assert parameters_of(ConversationsClient.update_settings) == set(schema("SettingsUpdate")["properties"])


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (ConversationSummary, "ConversationSummary"),
        (ConversationAction, "ConversationActionResponse"),
        (Quota, "QuotaView"),
    ],
)
def test_lifecycle_results_match_the_spec(model: type, name: str) -> None:
    documented = set(schema(name)["properties"])
    # `status` is "ok" on every action answer, and OpenHands' twin of conversation_status in the list.
    assert fields_of(model) == documented - {"status"}


def test_list_sends_the_documented_query_parameters() -> None:
    listing = api_document()["paths"]["/api/conversations"].get("get")
    if listing is None:
        pytest.skip("docs/openapi.json does not document GET /api/conversations yet: regenerate it (make openapi)")
    documented = {parameter["name"] for parameter in listing["parameters"] if parameter["in"] == "query"}
    assert parameters_of(ConversationsClient.list_page) == documented


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (AgentEvent, "AgentEventEnvelope"),
        (AgentEventPage, "AgentEventPage"),
        (Workspace, "WorkspaceSnapshot"),
        (ChangedFile, "ChangedFile"),
        (Accepted, "SendMessageResponse"),
    ],
)
def test_channel_results_match_the_spec(model: type, name: str) -> None:
    assert fields_of(model) == set(schema(name)["properties"])


def test_channel_requests_send_the_documented_fields() -> None:
    assert parameters_of(ConversationsClient.send_message) - {"conversation_id", "idempotency_key"} == set(
        schema("SendMessageRequest")["properties"]
    )
    assert parameters_of(ConversationsClient.confirm) - {"conversation_id"} == set(
        schema("ConfirmRequest")["properties"]
    )
    events = api_document()["paths"]["/api/conversations/{conversation_id}/events"]["get"]
    documented = {parameter["name"] for parameter in events["parameters"] if parameter["in"] == "query"}
    assert parameters_of(ConversationsClient.events_page) - {"conversation_id"} == documented
