from __future__ import annotations

import json
from pathlib import Path

from tests.support.api_gateway import FakeLambdaContext, api_event
from tests.support.git_repositories import make_repository


def call(event):
    from api.app import lambda_handler

    response = lambda_handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def test_create_then_get(stack, tmp_path: Path) -> None:
    commits = make_repository(tmp_path / "repo", ("main", "develop"))
    status, body = call(api_event("POST", "/api/settings", {"llm_model": "m", "llm_api_key": "sk-secret"}))
    assert status == 200, body
    assert body["llm_api_key_set"] is True and "sk-secret" not in json.dumps(body)
    status, body = call(
        api_event("POST", "/api/conversations", {"repository": str(tmp_path / "repo"), "selected_branch": "develop"})
    )
    assert status == 200, body
    assert body["status"] == "ok" and body["conversation_status"] == "STARTING"
    status, view = call(api_event("GET", f"/api/conversations/{body['conversation_id']}"))
    assert status == 200, view
    assert view["commit"] == commits["develop"]
