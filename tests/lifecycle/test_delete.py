"""DELETE /api/conversations/{id}: the record goes at once (its slot freed); the stream consumer
stops what runs and purges conversations/<id>/ (every version). A second delete is a 404."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from conversation_service import services
from conversation_service.dal.context_store import ContextStore

from tests.lifecycle.conftest import CONVERSATIONS, USER, Lifecycle


def stored_versions(life: Lifecycle, conversation_id: str) -> list[str]:
    s3 = life.session.client("s3")
    listing = s3.list_object_versions(
        Bucket=life.resources.physical["ContextBucket"], Prefix=f"conversations/{conversation_id}/"
    )
    return [item["Key"] for item in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]


def quota_item(life: Lifecycle) -> int:
    table = life.resources.physical["UsersTable"]
    item = life.session.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": f"USER#{USER}"}, "sk": {"S": "QUOTA"}}, ConsistentRead=True
    )["Item"]
    return int(item["active_count"]["N"])


def test_delete_a_running_conversation(life: Lifecycle, repository: Path) -> None:
    s3 = life.session.client("s3")
    bucket = life.resources.physical["ContextBucket"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})  # as the template's
    keep = life.create()
    conversation_id = life.create({"repository": str(repository), "replay_json": '[{"source": "user"}]'})
    life.drive_to_running(conversation_id)
    key = f"conversations/{conversation_id}/context.json"
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}")  # a second version
    assert len(stored_versions(life, conversation_id)) >= 3  # context (x2) and replay
    assert life.active_count() == 2

    assert life.call("DELETE", f"{CONVERSATIONS}/{conversation_id}") == (200, True)
    assert life.active_count() == 1  # at once
    status, body = life.call("GET", f"{CONVERSATIONS}/{conversation_id}")
    assert (status, body["msg_id"]) == (404, "CONVERSATION$NOT_FOUND")
    assert conversation_id not in str(life.call("GET", CONVERSATIONS)[1])
    life.wait_for(lambda: not stored_versions(life, conversation_id), what="the stored context purged")
    life.wait_for(lambda: not life.tasks(conversation_id, "RUNNING"), what="the sandbox stopped")
    assert life.tasks(conversation_id)[0]["stoppedReason"] == "conversation deleted"
    assert life.view(keep)["conversation_status"] == "STARTING"  # others untouched

    status, body = life.call("DELETE", f"{CONVERSATIONS}/{conversation_id}")  # again
    assert (status, body["msg_id"]) == (404, "CONVERSATION$NOT_FOUND")
    life.settle()
    assert quota_item(life) == 1 == life.active_count()


def test_delete_while_waiting_for_the_sandbox(life: Lifecycle) -> None:
    conversation_id = life.create()
    token = life.sandbox_token(conversation_id)
    assert life.call("DELETE", f"{CONVERSATIONS}/{conversation_id}") == (200, True)
    life.wait_for(lambda: not life.tasks(conversation_id, "RUNNING"), what="the sandbox stopped")
    assert conversation_id in life.stopped_executions
    assert life.sandbox("POST", "/sandbox/v1/events", token, {"type": "heartbeat"})[0] == 401
    assert life.active_count() == 0
    assert not stored_versions(life, conversation_id)


def test_delete_before_the_workflow_began(life: Lifecycle) -> None:
    conversation_id = life.create()
    assert life.call("DELETE", f"{CONVERSATIONS}/{conversation_id}") == (200, True)
    life.settle()
    assert life.execution_status(conversation_id) is None
    assert life.tasks(conversation_id) == []
    assert life.active_count() == 0
    assert services.conversation_store().get(conversation_id, consistent=True) is None


def test_delete_a_stopped_conversation(life: Lifecycle) -> None:
    conversation_id = life.create()
    assert life.call("POST", f"{CONVERSATIONS}/{conversation_id}/stop")[0] == 200
    assert life.call("DELETE", f"{CONVERSATIONS}/{conversation_id}") == (200, True)
    life.settle()
    assert life.active_count() == 0 == quota_item(life)


def test_a_context_written_after_the_deletion_is_purged_by_its_writer(
    life: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted while InitializeContext runs: the consumer purges first, then the step writes the
    context, finds the conversation gone, and removes what it wrote."""
    deleted, purged = threading.Event(), threading.Event()
    original = ContextStore.put_json

    def put_json(store: ContextStore, key: str, payload: dict[str, Any]) -> str:
        if key.endswith("/context.json") and not deleted.is_set():
            assert life.call("DELETE", f"{CONVERSATIONS}/{key.split('/')[1]}") == (200, True)
            deleted.set()
            purged.wait(20)
        return original(store, key, payload)

    monkeypatch.setattr(ContextStore, "put_json", put_json)
    conversation_id = life.create()
    life.pump()  # the INSERT: the workflow starts, InitializeContext deletes, then waits
    assert deleted.wait(20)
    life.pump()  # the REMOVE: the consumer stops the execution and purges (nothing yet)
    purged.set()
    life.wait_for(lambda: life.execution_status(conversation_id) not in (None, "RUNNING"), what="the end")
    assert not stored_versions(life, conversation_id)
    assert life.tasks(conversation_id) == []
