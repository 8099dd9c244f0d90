"""ConversationsClient against the fake API over real HTTP: bodies, typed results, paging, errors, waiting."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime

import pytest
from openhands_conversations_client import (
    ApiError,
    ApiUnreachable,
    Conversation,
    ConversationsClient,
    CreateMicroagent,
    MalformedResponse,
    SuggestedTask,
    WaitTimeout,
    api_root,
)
from openhands_conversations_client.errors import UNEXPECTED_RESPONSE

from tests.client.fake_api import HAPPY_PHASES, SETUP_FAILURE_MESSAGE, FakeConversationsApi, summary


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000/api"),
        ("http://127.0.0.1:3000/", "http://127.0.0.1:3000/api"),
        ("http://127.0.0.1:3000/api", "http://127.0.0.1:3000/api"),
        ("http://127.0.0.1:3000/api/", "http://127.0.0.1:3000/api"),
        (
            " https://abc.execute-api.us-east-1.amazonaws.com/Prod ",
            "https://abc.execute-api.us-east-1.amazonaws.com/Prod/api",
        ),
    ],
)
def test_endpoint_is_accepted_with_or_without_the_api_suffix(endpoint: str, expected: str) -> None:
    assert api_root(endpoint) == expected


@pytest.mark.parametrize(
    "endpoint", ["127.0.0.1:3000", "ftp://host/api", "http://user:secret@host/api", "http://host/api?x=1", "http://"]
)
def test_endpoint_that_is_not_a_plain_http_url_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint") as refused:
        api_root(endpoint)
    assert "secret" not in str(refused.value)


def test_create_sends_the_given_fields_only_and_the_idempotency_key(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    created = api.create(
        "user/repo",
        git_provider="GITHUB",
        selected_branch="develop",
        initial_user_msg="Please add a CONTRIBUTING.md",
        image_urls=["https://example.com/a.png"],
        conversation_instructions="Be brief.",
        idempotency_key="key-1",
    )

    assert created.conversation_status == "STARTING"
    assert created.conversation_id in fake_api.conversations
    (request,) = fake_api.requests_to("POST", "/api/conversations")
    assert request.body == {
        "repository": "user/repo",
        "git_provider": "GITHUB",
        "selected_branch": "develop",
        "initial_user_msg": "Please add a CONTRIBUTING.md",
        "image_urls": ["https://example.com/a.png"],
        "conversation_instructions": "Be brief.",
    }
    assert request.headers["idempotency-key"] == "key-1"
    assert request.headers["content-type"] == "application/json"


def test_create_with_nested_fields_is_accepted_by_the_service_schema(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    api.create(
        suggested_task=SuggestedTask(repo="user/repo", issue_number=7, title="Fix it", task_type="OPEN_ISSUE"),
        create_microagent=CreateMicroagent(repo="user/repo", git_provider="github", title="docs agent"),
        mcp_config={"shttp_servers": [{"url": "https://mcp.example.com", "api_key": "k"}]},
        replay_json='[{"source": "user", "message": "hi"}]',
    )

    (request,) = fake_api.requests_to("POST", "/api/conversations")
    assert request.body["suggested_task"] == {
        "repo": "user/repo",
        "issue_number": 7,
        "title": "Fix it",
        "task_type": "OPEN_ISSUE",
    }
    assert request.body["create_microagent"] == {"repo": "user/repo", "git_provider": "github", "title": "docs agent"}
    assert "repository" not in request.body
    assert "idempotency-key" not in request.headers


def test_error_body_becomes_api_error_with_status_msg_id_and_message(api: ConversationsClient) -> None:
    with pytest.raises(ApiError) as raised:
        api.create("user/repo", selected_branch="no-such-branch")

    assert raised.value.status == 400
    assert raised.value.msg_id == "STATUS$GIT_BRANCH_NOT_FOUND"
    assert raised.value.message == "Branch no-such-branch not found"
    assert raised.value.body["status"] == "error"


def test_validation_error_keeps_the_field_detail(api: ConversationsClient) -> None:
    with pytest.raises(ApiError) as raised:
        api.create(
            "user/repo", suggested_task={"repo": "user/repo", "issue_number": -1, "title": "t", "task_type": "X"}
        )

    assert raised.value.status == 422
    assert raised.value.msg_id == "ERROR$VALIDATION"
    locations = [detail["loc"] for detail in raised.value.body["detail"]]
    assert ["body", "suggested_task", "issue_number"] in locations
    assert ["body", "suggested_task", "task_type"] in locations


def test_get_returns_a_typed_conversation(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    fake_api.advance_on_get = False
    created = api.create("user/repo", selected_branch="develop")
    fake_api.advance(created.conversation_id)

    conversation = api.get(created.conversation_id)

    assert conversation.conversation_id == created.conversation_id
    assert conversation.conversation_status == "STARTING"
    assert conversation.runtime_status == "STATUS$INITIALIZING_CONTEXT"
    assert conversation.repository == "user/repo"
    assert conversation.selected_branch == "develop"
    assert conversation.max_iterations == 100
    assert conversation.confirmation_mode is False
    assert [entry.phase for entry in conversation.timeline] == ["STATUS$QUEUED", "STATUS$INITIALIZING_CONTEXT"]
    assert all(isinstance(entry.at, datetime) and entry.at.tzinfo is not None for entry in conversation.timeline)
    assert conversation.timeline[0].at <= conversation.timeline[1].at
    assert conversation.raw == fake_api.conversations[created.conversation_id]
    assert not conversation.is_settled


def test_unknown_conversation_is_not_found(api: ConversationsClient) -> None:
    with pytest.raises(ApiError) as raised:
        api.get("f" * 32)
    assert (raised.value.status, raised.value.msg_id) == (404, "CONVERSATION$NOT_FOUND")


def test_conversation_id_is_one_path_segment(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    with pytest.raises(ApiError) as raised:
        api.get("../settings")

    assert raised.value.msg_id == "CONVERSATION$NOT_FOUND"
    assert fake_api.requests[-1].path == "/api/conversations/..%2Fsettings"


def test_list_walks_every_page_newest_first(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    ids = [fake_api.add_conversation(title=f"number {index}") for index in range(7)]

    listed = list(api.list(page_size=3))

    assert [conversation.conversation_id for conversation in listed] == ids[::-1]
    assert listed[0].title == "number 6"
    assert (listed[0].selected_repository, listed[0].conversation_status) == ("user/repo", "STOPPED")
    pages = fake_api.requests_to("GET", "/api/conversations")
    assert len(pages) == 3
    assert "page_id" not in pages[0].query
    assert all(request.query["limit"] == ["3"] for request in pages)


def test_list_stops_at_the_limit_and_asks_only_for_what_it_needs(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    ids = [fake_api.add_conversation() for _ in range(7)]

    listed = list(api.list(page_size=3, limit=4))

    assert [conversation.conversation_id for conversation in listed] == ids[::-1][:4]
    pages = fake_api.requests_to("GET", "/api/conversations")
    assert [request.query["limit"] for request in pages] == [["3"], ["1"]]


def test_list_without_a_page_size_asks_for_the_limit(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    for _ in range(3):
        fake_api.add_conversation()

    assert len(list(api.list(limit=2))) == 2
    assert len(list(api.list(limit=500))) == 3
    assert [request.query["limit"] for request in fake_api.requests_to("GET", "/api/conversations")] == [
        ["2"],
        ["100"],
    ]


def test_list_filters_by_repository_on_every_page(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    mine = [fake_api.add_conversation("user/mine") for _ in range(3)]
    fake_api.add_conversation("user/other")

    listed = list(api.list(page_size=2, selected_repository="user/mine", conversation_trigger="api"))

    assert [conversation.conversation_id for conversation in listed] == mine[::-1]
    pages = fake_api.requests_to("GET", "/api/conversations")
    assert all(request.query["selected_repository"] == ["user/mine"] for request in pages)
    assert all(request.query["conversation_trigger"] == ["api"] for request in pages)


def test_list_page_returns_the_next_page_id(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    for _ in range(3):
        fake_api.add_conversation()

    first = api.list_page(limit=2)
    last = api.list_page(first.next_page_id, limit=2)

    assert len(first.results) == 2 and first.next_page_id is not None
    assert (len(last.results), last.next_page_id) == (1, None)
    with pytest.raises(ApiError) as raised:
        api.list_page(first.next_page_id, limit=2, selected_repository="user/other")
    assert (raised.value.status, raised.value.msg_id) == (400, "ERROR$INVALID_PAGE_ID")


def test_list_refuses_a_page_id_sent_twice(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    item = summary(fake_api.conversations[fake_api.add_conversation()])
    for _ in range(3):
        fake_api.force(200, {"results": [item], "next_page_id": "same"})

    with pytest.raises(MalformedResponse, match="twice"):
        list(api.list())


def test_stop_and_start_answer_the_new_status(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    fake_api.advance_on_get = False
    conversation_id = fake_api.add_conversation(status="RUNNING")

    stopped = api.stop(conversation_id)
    stopped_again = api.stop(conversation_id)
    started = api.start(conversation_id)

    assert (stopped.conversation_id, stopped.conversation_status) == (conversation_id, "STOPPED")
    assert stopped.message == "Conversation stopped"
    assert (stopped_again.conversation_status, stopped_again.message) == ("STOPPED", "Conversation was not running")
    assert (started.conversation_status, started.message) == ("STARTING", "Conversation starting")
    assert api.get(conversation_id).runtime_status == "STATUS$QUEUED"


def test_start_of_an_archived_conversation_is_a_conflict(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    conversation_id = fake_api.add_conversation(status="ARCHIVED")
    with pytest.raises(ApiError) as raised:
        api.start(conversation_id)
    assert (raised.value.status, raised.value.msg_id) == (409, "CONVERSATION$NOT_STARTABLE")


def test_rename_sends_the_title(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    conversation_id = fake_api.add_conversation()

    api.rename(conversation_id, "A better title")

    assert [request.body for request in fake_api.requests_to("PATCH", f"/api/conversations/{conversation_id}")] == [
        {"title": "A better title"}
    ]
    assert fake_api.conversations[conversation_id]["title"] == "A better title"


def test_delete_removes_the_conversation(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    conversation_id = fake_api.add_conversation()

    api.delete(conversation_id)

    with pytest.raises(ApiError) as raised:
        api.get(conversation_id)
    assert raised.value.status == 404


def test_settings_are_read_and_secrets_only_reported_as_set(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    updated = api.update_settings(
        llm_model="openai/gpt-5",
        llm_api_key="sk-new-secret",
        provider_tokens={"github": "ghp_secret"},
        max_iterations=50,
        confirmation_mode=True,
    )

    (request,) = fake_api.requests_to("POST", "/api/settings")
    assert request.body == {
        "llm_model": "openai/gpt-5",
        "llm_api_key": "sk-new-secret",
        "provider_tokens": {"github": "ghp_secret"},
        "max_iterations": 50,
        "confirmation_mode": True,
    }
    assert fake_api.secrets == {"llm_api_key": "sk-new-secret", "provider_tokens": {"github": "ghp_secret"}}
    assert (updated.llm_model, updated.max_iterations, updated.confirmation_mode) == ("openai/gpt-5", 50, True)
    assert updated.llm_api_key_set is True
    assert updated.provider_tokens_set == {"github": True}
    assert "secret" not in json.dumps(updated.raw)
    assert api.settings() == updated


def test_empty_secret_clears_it(api: ConversationsClient) -> None:
    assert api.update_settings(llm_api_key="").llm_api_key_set is False


def test_quota(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    fake_api.add_conversation(status="RUNNING")
    fake_api.add_conversation(status="STOPPED")

    quota = api.quota()

    assert (quota.limit, quota.active, quota.available, quota.policy) == (3, 1, 2, "close_oldest")


def test_api_key_is_sent_as_a_bearer_token() -> None:
    with FakeConversationsApi(api_key="k-123").running() as fake:
        with ConversationsClient(fake.url) as anonymous, pytest.raises(ApiError) as raised:
            anonymous.settings()
        assert (raised.value.status, raised.value.msg_id) == (401, "ERROR$UNAUTHORIZED")

        with ConversationsClient(fake.url.removesuffix("/api"), api_key="k-123") as client:
            assert client.settings().agent == "CodeActAgent"
        assert fake.requests[-1].headers["authorization"] == "Bearer k-123"
        assert fake.requests[-1].headers["user-agent"].startswith("openhands-conversations-client/")


def test_answer_without_the_error_body_is_still_an_api_error(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    fake_api.force(502, b"<html><body>Bad Gateway</body></html>")

    with pytest.raises(ApiError) as raised:
        api.quota()

    assert (raised.value.status, raised.value.msg_id) == (502, UNEXPECTED_RESPONSE)
    assert "Bad Gateway" in raised.value.message


def test_concurrency_limit_carries_retry_after_and_the_counts(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    body = {
        "status": "error",
        "message": "Too many active conversations",
        "msg_id": "CONCURRENCY_LIMIT_REACHED",
        "limit": 3,
        "current": 3,
    }
    fake_api.force(429, body, {"Retry-After": "7"})

    with pytest.raises(ApiError) as raised:
        api.create("user/repo")

    assert (raised.value.status, raised.value.msg_id, raised.value.retry_after) == (
        429,
        "CONCURRENCY_LIMIT_REACHED",
        7.0,
    )
    assert (raised.value.body["limit"], raised.value.body["current"]) == (3, 3)


def test_success_that_is_not_json_is_malformed(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    fake_api.force(200, b"<html>login page</html>")
    with pytest.raises(MalformedResponse):
        api.settings()


def test_success_missing_documented_fields_is_malformed(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    fake_api.force(200, {"status": "ok"})
    with pytest.raises(MalformedResponse, match="conversation_id"):
        api.create("user/repo")


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_nothing_listening_is_unreachable(closed_port: int) -> None:
    with ConversationsClient(f"http://127.0.0.1:{closed_port}") as client, pytest.raises(ApiUnreachable) as raised:
        client.get("a" * 32)
    assert "Connection refused" in raised.value.reason
    assert raised.value.url == f"http://127.0.0.1:{closed_port}/api/conversations/{'a' * 32}"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def test_no_answer_within_the_timeout_is_unreachable(silent_server: int) -> None:
    with (
        ConversationsClient(f"http://127.0.0.1:{silent_server}", timeout=0.3) as client,
        pytest.raises(ApiUnreachable, match=r"no answer within 0\.3 s"),
    ):
        client.settings()


def test_wait_reports_each_phase_once_and_returns_running(api: ConversationsClient) -> None:
    created = api.create("user/repo")
    seen: list[Conversation] = []

    final = api.wait_until_settled(created.conversation_id, on_change=seen.append, timeout=10, poll_interval=0.01)

    assert final.conversation_status == "RUNNING"
    assert final.agent_server_url == "http://127.0.0.1:9/agent"
    assert [conversation.runtime_status for conversation in seen] == [*HAPPY_PHASES, "STATUS$READY"]
    assert seen[-1] == final


def test_wait_reports_nothing_while_nothing_changes(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    fake_api.advance_on_get = False
    created = api.create("user/repo")
    seen: list[str] = []
    polls_between_changes = 3
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # the service moves on every third poll only
        pauses.append(seconds)
        if len(pauses) % polls_between_changes == 0:
            fake_api.advance(created.conversation_id)

    final = api.wait_until_settled(
        created.conversation_id, on_change=lambda c: seen.append(c.runtime_status), timeout=10, sleep=pause
    )

    assert final.conversation_status == "RUNNING"
    assert seen == ["STATUS$QUEUED", *HAPPY_PHASES, "STATUS$READY"]
    assert len(pauses) == polls_between_changes * (len(HAPPY_PHASES) + 1)


def test_wait_returns_the_error_with_its_code(api: ConversationsClient) -> None:
    created = api.create("user/broken-setup")

    final = api.wait_until_settled(created.conversation_id, timeout=10, poll_interval=0.01)

    assert (final.conversation_status, final.error_code) == ("ERROR", "SETUP_SCRIPT_FAILED")
    assert final.error_message == SETUP_FAILURE_MESSAGE
    assert final.error_details is not None and final.error_details["exit_code"] == 3


def test_wait_gives_up_after_the_timeout_with_the_last_state(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    fake_api.advance_on_get = False
    created = api.create("user/repo")
    pauses: list[float] = []

    with pytest.raises(WaitTimeout) as raised:
        api.wait_until_settled(created.conversation_id, timeout=0.3, poll_interval=0.05, sleep=pauses.append)

    assert raised.value.last.runtime_status == "STATUS$QUEUED"
    assert raised.value.conversation_id == created.conversation_id
    assert pauses and all(0 < pause <= 0.05 for pause in pauses)


def test_wait_polls_through_a_few_transient_failures(api: ConversationsClient, fake_api: FakeConversationsApi) -> None:
    created = api.create("user/repo")
    fake_api.force(503, {"status": "error", "message": "Service Unavailable", "msg_id": "STATUS$ERROR"})
    fake_api.force(502, b"Bad Gateway")
    fake_api.force(503, b"")

    final = api.wait_until_settled(created.conversation_id, timeout=10, poll_interval=0.01)

    assert final.conversation_status == "RUNNING"


def test_wait_stops_on_too_many_transient_failures_in_a_row(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    created = api.create("user/repo")
    for _ in range(4):
        fake_api.force(503, b"")

    with pytest.raises(ApiError) as raised:
        api.wait_until_settled(created.conversation_id, timeout=10, poll_interval=0.01)
    assert raised.value.status == 503


def test_wait_stops_at_once_on_an_error_that_is_not_transient(
    api: ConversationsClient, fake_api: FakeConversationsApi
) -> None:
    with pytest.raises(ApiError) as raised:
        api.wait_until_settled("e" * 32, timeout=10, poll_interval=0.01)
    assert raised.value.msg_id == "CONVERSATION$NOT_FOUND"
    assert len(fake_api.requests) == 1
