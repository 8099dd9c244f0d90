"""ConversationStatusChanged on the stack's bus, read back through a queue subscribed to it with a
rule: every status change of a whole life, in order, in the documented schema, with no secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conversation_service.models.events import ConversationStatusChanged

from tests.lifecycle.conftest import CONVERSATIONS, FIRST_MESSAGE, LLM_KEY, USER, Lifecycle

TITLE = "Rename the parser module"


def changes(events: list[dict[str, Any]]) -> list[tuple[str | None, str, str | None]]:
    return [(e["detail"]["old_status"], e["detail"]["new_status"], e["detail"]["runtime_status"]) for e in events]


def test_a_whole_life_is_published_in_order(life: Lifecycle, repository: Path) -> None:
    conversation_id = life.create({"repository": str(repository), "initial_user_msg": FIRST_MESSAGE})
    repository_name = life.view(conversation_id)["repository"]
    assert life.call("PATCH", f"{CONVERSATIONS}/{conversation_id}", {"title": TITLE}) == (200, True)
    context = life.drive_to_running(conversation_id)
    assert life.call("POST", f"{CONVERSATIONS}/{conversation_id}/stop")[0] == 200
    assert life.call("DELETE", f"{CONVERSATIONS}/{conversation_id}")[0] == 200
    life.settle(0.5)
    events = life.published()

    assert changes(events) == [
        (None, "STARTING", "STATUS$QUEUED"),
        ("STARTING", "STARTING", "STATUS$INITIALIZING_CONTEXT"),
        ("STARTING", "STARTING", "STATUS$STARTING_RUNTIME"),
        ("STARTING", "STARTING", "STATUS$RUNTIME_STARTED"),
        ("STARTING", "STARTING", "STATUS$SETTING_UP_WORKSPACE"),
        ("STARTING", "RUNNING", "STATUS$READY"),
        ("RUNNING", "STOPPED", "STATUS$STOPPED"),
        ("STOPPED", "DELETED", None),
    ]
    for event in events:
        assert (event["source"], event["detail-type"]) == ("openhands.conversations", "ConversationStatusChanged")
        detail = ConversationStatusChanged.model_validate(event["detail"])  # the documented schema
        assert detail.schema_version == "1"
        assert (detail.conversation_id, detail.user_id, detail.run) == (conversation_id, USER, 1)
        assert detail.trigger == "api" and detail.repository == repository_name
        assert event["time"].startswith(detail.changed_at[:19])
    assert len({event["detail"]["change_id"] for event in events}) == len(events)
    assert events[-1]["detail"]["old_runtime_status"] == "STATUS$STOPPED"
    assert events[-2]["detail"]["status_reason"] == "CONVERSATION$STOPPED_BY_USER"
    published = json.dumps(events)
    for secret in (LLM_KEY, FIRST_MESSAGE, TITLE, context["session_api_key"]):
        assert secret not in published


def test_an_error_is_published_with_its_code_and_without_its_output(life: Lifecycle) -> None:
    conversation_id = life.create()
    token = life.sandbox_token(conversation_id)
    failure = {
        "type": "failed",
        "error_code": "SETUP_SCRIPT_FAILED",
        "message": "setup.sh exited with 3",
        "details": {"exit_code": 3, "output_tail": "password=hunter2"},
    }
    assert life.sandbox("POST", "/sandbox/v1/events", token, failure)[0] == 200
    life.wait_status(conversation_id, "ERROR")
    life.settle()
    events = life.published()
    error = events[-1]["detail"]
    assert (error["old_status"], error["new_status"], error["runtime_status"], error["error_code"]) == (
        "STARTING",
        "ERROR",
        "STATUS$ERROR",
        "SETUP_SCRIPT_FAILED",
    )
    assert "hunter2" not in json.dumps(events) and "setup.sh" not in json.dumps(events)


def test_a_restart_is_published_with_its_run(life: Lifecycle) -> None:
    conversation_id = life.create()
    life.drive_to_running(conversation_id)
    assert life.call("POST", f"{CONVERSATIONS}/{conversation_id}/stop")[0] == 200
    life.settle()
    life.published()
    assert life.call("POST", f"{CONVERSATIONS}/{conversation_id}/start")[0] == 200
    life.drive_to_running(conversation_id)
    life.settle()
    events = life.published()
    assert changes(events)[0] == ("STOPPED", "STARTING", "STATUS$QUEUED")
    assert changes(events)[-1] == ("STARTING", "RUNNING", "STATUS$READY")
    assert {event["detail"]["run"] for event in events} == {2}


def test_changes_that_are_not_status_changes_publish_nothing(life: Lifecycle) -> None:
    conversation_id = life.create()
    life.drive_to_running(conversation_id)
    life.settle()
    life.published()
    assert life.call("PATCH", f"{CONVERSATIONS}/{conversation_id}", {"title": "another"})[0] == 200
    assert life.call("POST", f"{CONVERSATIONS}/{conversation_id}/start")[0] == 200  # already running
    life.settle()
    assert life.published() == []
