"""The spec's defaults, user settings over them, and secrets that never come back out."""

from __future__ import annotations

import json
import logging

import boto3

from tests.emulated.support import (
    GITHUB_TOKEN,
    LLM_KEY,
    SETTINGS,
    call_api,
    configure_user,
    conversation_item,
    create,
    get_conversation,
    save_settings,
    smart_http_git_server,
)
from tests.support.api_gateway import api_event


def test_defaults_are_recorded_on_the_conversation(user, tables) -> None:
    conversation_id = create({}).body["conversation_id"]
    view = get_conversation(conversation_id).body
    assert view["agent"] == "CodeActAgent"
    assert view["max_iterations"] == 100
    assert view["confirmation_mode"] is False
    assert view["security_analyzer"] is None
    assert view["sandbox_image"] == "ghcr.io/all-hands-ai/runtime:latest"
    assert view["runtime"] == "fargate"
    item = conversation_item(tables["conversations"], conversation_id)
    assert item["agent"] == {"S": "CodeActAgent"}
    assert item["max_iterations"] == {"N": "100"}
    assert item["confirmation_mode"] == {"BOOL": False}
    assert "security_analyzer" not in item
    assert item["sandbox_image"] == {"S": "ghcr.io/all-hands-ai/runtime:latest"}
    assert item["runtime"] == {"S": "fargate"}


def test_user_settings_override_the_defaults(stack) -> None:
    configure_user(
        "user-1",
        agent="BrowsingAgent",
        max_iterations=42,
        confirmation_mode=True,
        security_analyzer="invariant",
    )
    view = get_conversation(create({}).body["conversation_id"]).body
    assert (view["agent"], view["max_iterations"], view["confirmation_mode"]) == ("BrowsingAgent", 42, True)
    assert view["security_analyzer"] == "invariant"
    assert view["llm_model"] == "anthropic/claude-sonnet-4"


def test_settings_round_trip_and_partial_updates(stack) -> None:
    configure_user("user-1", max_iterations=7)
    assert save_settings({"confirmation_mode": True}).status == 200
    shown = call_api(api_event("GET", SETTINGS)).body
    assert shown["max_iterations"] == 7 and shown["confirmation_mode"] is True
    assert shown["agent"] == "CodeActAgent"
    assert shown["sandbox_base_container_image"] == "ghcr.io/all-hands-ai/runtime:latest"


def test_settings_of_another_user_are_not_found(user) -> None:
    response = call_api(api_event("GET", SETTINGS, user_id="user-2"))
    assert (response.status, response.body["msg_id"]) == (400, "CONFIGURATION$SETTINGS_NOT_FOUND")


def test_secrets_are_never_returned(stack) -> None:
    saved = save_settings({"llm_model": "m", "llm_api_key": LLM_KEY, "provider_tokens": {"GITHUB": GITHUB_TOKEN}})
    shown = call_api(api_event("GET", SETTINGS))
    for response in (saved, shown):
        assert response.status == 200
        assert LLM_KEY not in response.raw and GITHUB_TOKEN not in response.raw
        assert "llm_api_key" not in response.body and "provider_tokens" not in response.body
        assert response.body["llm_api_key_set"] is True
        assert response.body["provider_tokens_set"] == {"github": True}


def test_secrets_are_stored_sealed(stack, tables) -> None:
    save_settings({"llm_model": "m", "llm_api_key": LLM_KEY, "provider_tokens": {"github": GITHUB_TOKEN}})
    items = boto3.client("dynamodb").scan(TableName=tables["users"])["Items"]
    raw = json.dumps(items)
    assert "sealed_secrets" in raw
    assert LLM_KEY not in raw and GITHUB_TOKEN not in raw
    # Not merely encoded either: the sealed blob is KMS ciphertext bound to the user.
    assert "LLM-KEY" not in raw and "TEST_TOKEN" not in raw


def test_an_empty_string_clears_a_secret(stack) -> None:
    configure_user("user-1")
    cleared = save_settings({"llm_api_key": ""})
    assert cleared.body["llm_api_key_set"] is False
    response = create({})
    assert (response.status, response.body["msg_id"]) == (400, "STATUS$ERROR_LLM_AUTHENTICATION")


def test_secrets_stay_out_of_the_logs(stack, repository, capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    path, _ = repository
    with smart_http_git_server({"/team/repo.git": path}) as base_url:
        assert (
            save_settings(
                {"llm_model": "m", "llm_api_key": LLM_KEY, "provider_tokens": {"gitlab": GITHUB_TOKEN}}
            ).status
            == 200
        )
        created = create({"repository": f"{base_url}/team/repo.git", "git_provider": "gitlab"})
        refused = create({"repository": f"{base_url}/team/nope.git", "git_provider": "gitlab"})
    assert created.status == 200 and refused.status == 400
    get_conversation(created.body["conversation_id"])
    call_api(api_event("GET", SETTINGS))
    # A body that fails validation, holding the key.
    call_api(api_event("POST", SETTINGS, {"llm_api_key": LLM_KEY, "unknown": 1}))
    captured = capsys.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert logs, "the handlers log something; this test would be vacuous otherwise"
    assert LLM_KEY not in logs
    assert GITHUB_TOKEN not in logs


# -- the sandbox image: the recorded one is the one that runs -------------------------------------
def test_another_sandbox_image_is_refused_naming_the_one_that_runs(stack) -> None:
    configure_user("user-1")
    refused = save_settings({"sandbox_base_container_image": "registry.example.com/runtime:7"})
    assert (refused.status, refused.body["msg_id"]) == (400, "CONFIGURATION$SANDBOX_IMAGE_NOT_SELECTABLE")
    assert "ghcr.io/all-hands-ai/runtime:latest" in refused.body["message"]
    # The image that runs is accepted (a client may send back what it was shown).
    assert save_settings({"sandbox_base_container_image": "ghcr.io/all-hands-ai/runtime:latest"}).status == 200


def test_a_conversation_records_the_task_definitions_image_whatever_was_stored(stack, tables) -> None:
    """A setting stored before images were refused is not what runs, so it is not recorded."""
    configure_user("user-1")
    boto3.client("dynamodb").update_item(
        TableName=tables["users"],
        Key={"pk": {"S": "USER#user-1"}, "sk": {"S": "SETTINGS"}},
        UpdateExpression="SET sandbox_base_container_image = :image",
        ExpressionAttributeValues={":image": {"S": "registry.example.com/runtime:7"}},
    )
    view = get_conversation(create({}).body["conversation_id"]).body
    task_definition = boto3.client("ecs").describe_task_definition(
        taskDefinition=stack.physical["SandboxTaskDefinition"]
    )["taskDefinition"]
    assert view["sandbox_image"] == task_definition["containerDefinitions"][0]["image"]
    assert call_api(api_event("GET", SETTINGS)).body["sandbox_base_container_image"] == view["sandbox_image"]
