from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import WorkflowHarness
from tests.support.git_repositories import make_repository


def test_conversation_reaches_running(workflow: WorkflowHarness, tmp_path: Path) -> None:
    commits = make_repository(tmp_path / "repo", ("main", "develop"))
    assert workflow.api("POST", "/api/settings", {"llm_model": "m", "llm_api_key": "sk-live-123"})[0] == 200
    status, created = workflow.api(
        "POST",
        "/api/conversations",
        {"repository": str(tmp_path / "repo"), "selected_branch": "develop", "initial_user_msg": "fix it"},
    )
    assert status == 200, created
    conversation_id = created["conversation_id"]
    token = workflow.open_sandbox_token(conversation_id)
    status, context = workflow.sandbox("GET", "/sandbox/v1/context", token)
    assert status == 200, context
    assert context["repository"]["commit"] == commits["develop"]
    assert context["llm"]["api_key"] == "sk-live-123"
    assert context["first_message"]["text"] == "fix it"
    # The context (with secrets) is handed out once.
    assert workflow.sandbox("GET", "/sandbox/v1/context", token)[0] == 409
    for phase in ("STATUS$RUNTIME_STARTED", "STATUS$SETTING_UP_WORKSPACE", "STATUS$RUNNING_SETUP_SCRIPT"):
        assert workflow.sandbox("POST", "/sandbox/v1/events", token, {"type": "phase", "phase": phase})[0] == 200
    ready = {
        "type": "ready",
        "agent_server_url": "http://127.0.0.1:8000",
        "agent_conversation_id": "abc",
        "workspace_dir": "/workspace/repo",
        "commit": commits["develop"],
        "microagents": ["repo"],
    }
    assert workflow.sandbox("POST", "/sandbox/v1/events", token, ready)[0] == 200
    view = workflow.wait_for(
        lambda: (c := workflow.conversation(conversation_id))["conversation_status"] == "RUNNING" and c,
        what="RUNNING",
    )
    assert view["runtime_status"] == "STATUS$READY"
    assert view["agent_server_url"] == "http://127.0.0.1:8000"
    phases = [entry["phase"] for entry in view["timeline"]]
    assert phases[:3] == ["STATUS$QUEUED", "STATUS$INITIALIZING_CONTEXT", "STATUS$STARTING_RUNTIME"]
    assert phases[-1] == "STATUS$READY"
    workflow.wait_for(lambda: workflow.execution(conversation_id)["status"] == "SUCCEEDED", what="execution end")
    history = str(workflow.history(conversation_id))
    assert "sk-live-123" not in history
