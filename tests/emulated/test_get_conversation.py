"""GET /api/conversations/{id}: the owner sees where the conversation is; nobody else sees it exists."""

from __future__ import annotations

import uuid
from datetime import datetime

from tests.emulated.support import configure_user, create, get_conversation


def test_the_owner_sees_status_repository_branch_commit_and_timestamps(user, repository) -> None:
    path, commits = repository
    created = create({"repository": str(path), "selected_branch": "feature/login"})
    response = get_conversation(created.body["conversation_id"])
    assert response.status == 200, response.body
    view = response.body
    assert view["conversation_id"] == created.body["conversation_id"]
    assert view["conversation_status"] == "STARTING"
    assert view["runtime_status"] == "STATUS$QUEUED"
    assert view["repository"] == str(path)
    assert view["selected_branch"] == "feature/login"
    assert view["commit"] == commits["feature/login"]
    created_at = datetime.fromisoformat(view["created_at"])
    assert datetime.fromisoformat(view["updated_at"]) >= created_at
    assert [entry["phase"] for entry in view["timeline"]] == ["STATUS$QUEUED"]


def test_another_user_gets_the_same_404_as_for_a_missing_id(user) -> None:
    configure_user("user-2")
    conversation_id = create({}).body["conversation_id"]
    theirs = get_conversation(conversation_id, user_id="user-2")
    missing = get_conversation(uuid.uuid4().hex, user_id="user-2")
    assert theirs.status == missing.status == 404
    assert theirs.raw == missing.raw
    assert conversation_id not in theirs.raw


def test_the_view_holds_no_secrets_or_internals(user) -> None:
    view = get_conversation(create({}).body["conversation_id"]).body
    for hidden in ("user_id", "request", "clone_url", "execution_arn", "task_arn", "llm_base_url", "active_user_id"):
        assert hidden not in view
