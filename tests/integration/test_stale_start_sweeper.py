"""A conversation STARTING with no workflow left to end it is closed by the sweeper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from conversation_service import services

from tests.integration.conftest import WorkflowHarness
from tests.support.git_repositories import make_repository


def test_a_conversation_whose_workflow_never_started_is_closed(workflow: WorkflowHarness, tmp_path: Path) -> None:
    make_repository(tmp_path / "repo")
    assert workflow.api("POST", "/api/settings", {"llm_model": "m", "llm_api_key": "k"})[0] == 200
    # The stream is never pumped: as if the start had gone to the dead-letter queue.
    status, created = workflow.api("POST", "/api/conversations", {"repository": str(tmp_path / "repo")})
    assert status == 200, created
    stuck = created["conversation_id"]
    sweeper = services.stale_start_sweeper()
    assert sweeper.sweep() == []  # young: left alone
    later = datetime.now(UTC) + timedelta(seconds=3901)
    assert sweeper.sweep(now=later) == [stuck]
    view = workflow.conversation(stuck)
    assert view["conversation_status"] == "ERROR" and view["error_code"] == "INTERNAL"
    assert "STATUS$QUEUED" in view["error_message"]
    assert services.user_store().active_count("user-1") == 0
    assert sweeper.sweep(now=later) == []  # closing twice is harmless
    assert workflow.runtime.invoke("StaleStartSweeperFunction", {"detail-type": "Scheduled Event"}) == {"closed": []}
