"""POST /api/conversations: the spec's body fields, all optional, nothing else; the spec's answers."""

from __future__ import annotations

import re
from typing import Any

from tests.emulated.support import conversation_item, create, get_conversation
from tests.unit.test_create_request_model import SPEC_FIELDS


def spec_full_example(repository: str) -> dict[str, Any]:
    """The spec's "完整配置示例", with a local repository in place of github.com."""
    return {
        "repository": repository,
        "git_provider": "GITHUB",
        "selected_branch": "feature/login",
        "initial_user_msg": "请帮我实现这个新功能",
        "image_urls": ["https://example.com/screenshot.png"],
        "conversation_instructions": "这是一个高优先级任务，请尽快完成",  # noqa: RUF001 (the spec, verbatim)
        "mcp_config": {"shttp_servers": [{"name": "default-mcp-server", "url": "http://localhost:8080"}]},
    }


def every_field(repository: str) -> dict[str, Any]:
    return {
        **spec_full_example(repository),
        "replay_json": '[{"action": "message", "args": {"content": "hi"}}]',
        "suggested_task": {
            "git_provider": "github",
            "issue_number": 7,
            "repo": repository,
            "title": "Fix the failing checks",
            "task_type": "FAILING_CHECKS",
        },
        "create_microagent": {"repo": repository, "git_provider": "github", "title": "Add a testing microagent"},
    }


def assert_created(response) -> str:
    assert response.status == 200, response.body
    assert set(response.body) == {"status", "conversation_id", "conversation_status"}
    assert response.body["status"] == "ok"
    assert response.body["conversation_status"] == "STARTING"
    assert re.fullmatch(r"[0-9a-f]{32}", response.body["conversation_id"])
    return response.body["conversation_id"]


def test_the_spec_full_example_is_accepted_and_answered_as_the_spec_says(user, repository) -> None:
    path, commits = repository
    conversation_id = assert_created(create(spec_full_example(str(path))))
    view = get_conversation(conversation_id).body
    assert view["selected_branch"] == "feature/login"
    assert view["commit"] == commits["feature/login"]


def test_every_field_at_once_is_accepted_and_kept_with_the_conversation(user, repository, tables) -> None:
    path, _ = repository
    body = every_field(str(path))
    conversation_id = assert_created(create(body))
    item = conversation_item(tables["conversations"], conversation_id)
    # mcp_config may carry server keys: it is kept sealed (KMS) beside the rest of the request.
    assert set(item["request"]["M"]) == SPEC_FIELDS - {"mcp_config"}
    assert item["sealed_mcp_config"]["S"] and "localhost:8080" not in item["sealed_mcp_config"]["S"]
    assert item["request"]["M"]["initial_user_msg"] == {"S": body["initial_user_msg"]}


def test_every_field_is_optional(user, repository) -> None:
    path, _ = repository
    full = every_field(str(path))
    assert_created(create({}))
    for field in sorted(SPEC_FIELDS - {"selected_branch"}):
        response = create({field: full[field]})
        assert response.status == 200, (field, response.body)
    # A branch only means something with a repository.
    assert create({"repository": str(path), "selected_branch": "main"}).status == 200
    lone_branch = create({"selected_branch": "main"})
    assert (lone_branch.status, lone_branch.body["msg_id"]) == (400, "ERROR$INVALID_REQUEST")


def test_unknown_fields_are_refused_with_field_level_detail(user) -> None:
    cases = {
        "top level": ({"repository": None, "agent": "CodeActAgent"}, ["body", "agent"]),
        "inside mcp_config": (
            {"mcp_config": {"shttp_servers": [{"url": "http://x", "token": "t"}]}},
            ["body", "mcp_config", "shttp_servers", 0, "token"],
        ),
        "inside suggested_task": (
            {"suggested_task": {"issue_number": 1, "repo": "o/r", "title": "t", "task_type": "OPEN_PR", "x": 1}},
            ["body", "suggested_task", "x"],
        ),
    }
    for name, (body, location) in cases.items():
        response = create(body)
        assert response.status == 422, (name, response.body)
        assert response.body["status"] == "error"
        assert response.body["msg_id"] == "ERROR$VALIDATION"
        assert isinstance(response.body["message"], str) and response.body["message"]
        assert {"loc": location, "msg": "Extra inputs are not permitted", "type": "extra_forbidden"} in response.body[
            "detail"
        ], name


def test_wrong_types_and_values_are_refused_with_detail(user) -> None:
    for body, location in (
        ({"image_urls": "https://example.com/a.png"}, ["body", "image_urls"]),
        ({"git_provider": "sourceforge"}, ["body", "git_provider"]),
        ({"initial_user_msg": 42}, ["body", "initial_user_msg"]),
        ({"mcp_config": {"shttp_servers": [{"name": "no url"}]}}, ["body", "mcp_config", "shttp_servers", 0, "url"]),
    ):
        response = create(body)
        assert response.status == 422, (body, response.body)
        assert response.body["msg_id"] == "ERROR$VALIDATION"
        assert [entry["loc"] for entry in response.body["detail"]] == [location], response.body


def test_validation_detail_does_not_echo_the_input(user) -> None:
    response = create({"mcp_config": {"shttp_servers": [{"url": "http://x", "api_key": ["sk-SECRET-in-a-list"]}]}})
    assert response.status == 422
    assert "sk-SECRET-in-a-list" not in response.raw
