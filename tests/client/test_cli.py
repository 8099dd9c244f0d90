"""Every `convo` command against the fake API: text and --json output, exit codes, error mapping, paging."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.client.conftest import RunConvo
from tests.client.fake_api import SETUP_FAILURE_MESSAGE, FakeConversationsApi, summary

FAST = ("--poll-interval", "0.01")


def only_conversation(fake_api: FakeConversationsApi) -> str:
    (conversation_id,) = fake_api.conversations
    return conversation_id


# -- create ----------------------------------------------------------------------------------------
def test_create_prints_the_id_and_how_to_follow_it(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    result = convo("create", "--repo", "user/repo", "--branch", "develop", "--message", "hi")

    conversation_id = only_conversation(fake_api)
    assert result.code == 0
    assert result.stdout.splitlines() == [
        f"created conversation {conversation_id} (STARTING)",
        f"follow it: convo show {conversation_id}",
    ]
    (request,) = fake_api.requests_to("POST", "/api/conversations")
    assert request.body == {"repository": "user/repo", "selected_branch": "develop", "initial_user_msg": "hi"}


def test_create_passes_every_option(convo: RunConvo, fake_api: FakeConversationsApi, tmp_path: Path) -> None:
    (tmp_path / "mcp.json").write_text('{"sse_servers": [{"url": "https://mcp.example.com/sse"}]}')
    (tmp_path / "replay.json").write_text('[{"source": "user"}]')
    result = convo(
        "create",
        "--repository",
        "user/repo",
        "--provider",
        "gitlab",
        "--message",
        "-",
        "--instructions",
        "Keep it short.",
        "--image",
        "https://example.com/1.png",
        "--image",
        "https://example.com/2.png",
        "--mcp-config",
        f"@{tmp_path / 'mcp.json'}",
        "--replay-json",
        str(tmp_path / "replay.json"),
        "--suggested-task",
        '{"repo": "user/repo", "issue_number": 3, "title": "Bug", "task_type": "OPEN_ISSUE"}',
        "--create-microagent",
        '{"repo": "user/repo"}',
        "--idempotency-key",
        "idem-9",
        stdin="a message\nover two lines\n",
    )

    assert result.code == 0, result.stderr
    (request,) = fake_api.requests_to("POST", "/api/conversations")
    assert request.body == {
        "repository": "user/repo",
        "git_provider": "gitlab",
        "initial_user_msg": "a message\nover two lines",
        "conversation_instructions": "Keep it short.",
        "image_urls": ["https://example.com/1.png", "https://example.com/2.png"],
        "mcp_config": {"sse_servers": [{"url": "https://mcp.example.com/sse"}]},
        "replay_json": '[{"source": "user"}]',
        "suggested_task": {"repo": "user/repo", "issue_number": 3, "title": "Bug", "task_type": "OPEN_ISSUE"},
        "create_microagent": {"repo": "user/repo"},
    }
    assert request.headers["idempotency-key"] == "idem-9"


def test_create_json_prints_the_api_answer(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    result = convo("create", "--repo", "user/repo", "--json")

    assert result.code == 0
    assert result.json() == {
        "status": "ok",
        "conversation_id": only_conversation(fake_api),
        "conversation_status": "STARTING",
    }


def test_create_wait_prints_each_phase_and_exits_0_when_running(
    convo: RunConvo, fake_api: FakeConversationsApi
) -> None:
    result = convo("create", "--repo", "user/repo", "--branch", "main", "--message", "hi", "--wait", *FAST)

    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Conversation {only_conversation(fake_api)}  user/repo @ main"
    labels = [line.split("] ", 1)[1].split(" (")[0] for line in lines[1:9]]
    assert labels == [
        "Queued",
        "Initializing context",
        "Starting runtime",
        "Runtime started",
        "Setting up workspace",
        "Running setup script",
        "Setting up git hooks",
        "Starting agent server",
    ]
    assert lines[9].endswith("Starting agent server done after " + lines[9].rsplit(" ", 1)[1])
    assert lines[10].startswith("RUNNING after ")
    assert lines[10].endswith("; agent server http://127.0.0.1:9/agent")


def test_create_wait_exits_1_with_the_error_code_and_message(convo: RunConvo) -> None:
    result = convo("create", "--repo", "user/broken-setup", "--wait", *FAST)

    assert result.code == 1
    assert "Running setup script failed after" in result.stdout
    assert "ERROR SETUP_SCRIPT_FAILED after" in result.stdout
    assert " ".join(result.stdout.split()).count(SETUP_FAILURE_MESSAGE) == 1
    assert "  exit code 3" in result.stdout
    assert "  | npm ERR! missing script: build" in result.stdout


def test_create_wait_json_prints_only_the_final_conversation(convo: RunConvo) -> None:
    running = convo("create", "--repo", "user/repo", "--wait", "--json", *FAST)
    failed = convo("create", "--repo", "user/broken-setup", "--wait", "--json", *FAST)

    assert (running.code, running.json()["conversation_status"]) == (0, "RUNNING")
    assert (failed.code, failed.json()["conversation_status"], failed.json()["error_code"]) == (
        1,
        "ERROR",
        "SETUP_SCRIPT_FAILED",
    )


def test_create_wait_gives_up_with_exit_4(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    fake_api.advance_on_get = False

    result = convo("create", "--repo", "user/repo", "--wait", "--wait-timeout", "0.2", "--poll-interval", "0.05")

    conversation_id = only_conversation(fake_api)
    assert result.code == 4
    assert f"conversation {conversation_id} still STARTING (STATUS$QUEUED) after 0.2 s" in result.stderr
    assert f"convo show {conversation_id}" in result.stderr

    as_json = convo("create", "--repo", "user/repo", "--wait", "--wait-timeout", "0.1", "--json")
    assert as_json.code == 4
    assert as_json.json()["msg_id"] == "CLIENT$WAIT_TIMEOUT"
    assert as_json.json()["conversation"]["conversation_status"] == "STARTING"


def test_api_error_exits_3_with_msg_id_and_message(convo: RunConvo) -> None:
    result = convo("create", "--repo", "user/repo", "--branch", "no-such-branch")

    assert (result.code, result.stdout) == (3, "")
    assert result.stderr == "convo: STATUS$GIT_BRANCH_NOT_FOUND (HTTP 400): Branch no-such-branch not found\n"


def test_api_error_json_is_the_error_body_with_the_http_status(convo: RunConvo) -> None:
    result = convo("create", "--repo", "user/repo", "--branch", "no-such-branch", "--json")

    assert result.code == 3
    assert result.json() == {
        "status": "error",
        "http_status": 400,
        "msg_id": "STATUS$GIT_BRANCH_NOT_FOUND",
        "message": "Branch no-such-branch not found",
    }


def test_validation_error_lists_the_fields(convo: RunConvo) -> None:
    result = convo("create", "--suggested-task", '{"repo": "user/repo", "title": "t", "task_type": "OPEN_PR"}')

    assert result.code == 3
    assert "ERROR$VALIDATION (HTTP 422)" in result.stderr
    assert "  body.suggested_task.issue_number: Field required" in result.stderr


def test_concurrency_limit_says_when_to_retry(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    body = {"status": "error", "message": "Too many", "msg_id": "CONCURRENCY_LIMIT_REACHED", "limit": 3, "current": 3}
    fake_api.force(429, body, {"Retry-After": "30"})

    result = convo("create", "--repo", "user/repo")

    assert result.code == 3
    assert result.stderr.splitlines() == [
        "convo: CONCURRENCY_LIMIT_REACHED (HTTP 429): Too many",
        "convo:   retry after 30 s",
    ]


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["--suggested-task", "{not json"], "--suggested-task: not valid JSON"),
        (["--mcp-config", "@/no/such/file.json"], "--mcp-config: cannot read /no/such/file.json"),
        (["--message", "-", "--instructions", "-"], "--instructions and --message cannot both read standard input"),
    ],
)
def test_arguments_that_make_no_sense_exit_2(
    convo: RunConvo, fake_api: FakeConversationsApi, arguments: list[str], complaint: str
) -> None:
    result = convo("create", "--repo", "user/repo", *arguments)

    assert result.code == 2
    assert complaint in result.stderr
    assert fake_api.requests == []


# -- list and show ---------------------------------------------------------------------------------
def test_list_shows_a_table_newest_first(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    ids = [fake_api.add_conversation(title=f"task {index}") for index in range(5)]

    result = convo("list", "--limit", "3")

    assert result.code == 0
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "PHASE", "REPOSITORY", "CREATED", "TITLE"]
    assert [row.split()[0] for row in rows] == ids[::-1][:3]
    assert rows[0].split()[1:3] == ["STOPPED", "Queued"]
    assert rows[0].endswith("task 4")


def test_list_all_walks_the_pages(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    ids = [fake_api.add_conversation() for _ in range(5)]

    result = convo("list", "--all", "--page-size", "2", "--json")

    assert result.code == 0
    assert [item["conversation_id"] for item in result.json()] == ids[::-1]
    assert result.json()[0] == summary(fake_api.conversations[ids[-1]])
    assert len(fake_api.requests_to("GET", "/api/conversations")) == 3


def test_list_filters(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    mine = fake_api.add_conversation("user/mine")
    fake_api.add_conversation("user/other")

    result = convo("list", "--repo", "user/mine", "--trigger", "api", "--json")

    assert [item["conversation_id"] for item in result.json()] == [mine]
    (request,) = fake_api.requests_to("GET", "/api/conversations")
    assert (request.query["selected_repository"], request.query["conversation_trigger"]) == (["user/mine"], ["api"])


def test_list_with_no_conversations(convo: RunConvo) -> None:
    assert convo("list").stdout == "no conversations\n"
    assert convo("list", "--json").json() == []


def test_show_prints_status_repository_and_timeline(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    fake_api.advance_on_get = False
    convo("create", "--repo", "user/repo", "--branch", "develop")
    conversation_id = only_conversation(fake_api)
    fake_api.advance(conversation_id)

    result = convo("show", conversation_id)

    assert result.code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"Conversation {conversation_id}"
    assert "  status       STARTING (Initializing context)" in lines
    assert "  repository   user/repo @ develop" in lines
    assert lines[-3] == "  timeline:"
    assert lines[-2].split()[2:] == ["Queued", lines[-2].split()[-1]]
    assert lines[-2].endswith("s")
    assert lines[-1].split()[2:4] == ["Initializing", "context"]
    assert lines[-1].endswith("s so far")


def test_show_of_a_failed_conversation_has_the_error(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    convo("create", "--repo", "user/broken-setup", "--wait", *FAST)

    result = convo("show", only_conversation(fake_api))

    assert f"  error        SETUP_SCRIPT_FAILED: {SETUP_FAILURE_MESSAGE}" in result.stdout
    assert "  | npm ERR! missing script: build" in result.stdout


def test_show_json_is_the_api_view(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    conversation_id = fake_api.add_conversation()
    assert convo("show", conversation_id, "--json").json() == fake_api.conversations[conversation_id]


def test_show_unknown_exits_3(convo: RunConvo) -> None:
    result = convo("show", "0" * 32)
    assert result.code == 3
    assert "CONVERSATION$NOT_FOUND (HTTP 404)" in result.stderr


# -- lifecycle -------------------------------------------------------------------------------------
def test_stop_start_rename_delete(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    fake_api.advance_on_get = False
    conversation_id = fake_api.add_conversation(status="RUNNING")

    assert convo("stop", conversation_id).stdout == f"{conversation_id}: Conversation stopped (STOPPED)\n"
    assert convo("start", conversation_id).stdout == f"{conversation_id}: Conversation starting (STARTING)\n"
    assert convo("rename", conversation_id, "New title").stdout == f"renamed {conversation_id}: New title\n"
    assert fake_api.conversations[conversation_id]["title"] == "New title"
    assert convo("delete", conversation_id).stdout == f"deleted {conversation_id}\n"
    assert fake_api.conversations == {}
    again = convo("delete", conversation_id)
    assert again.code == 3
    assert "CONVERSATION$NOT_FOUND (HTTP 404)" in again.stderr


def test_lifecycle_json(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    fake_api.advance_on_get = False
    conversation_id = fake_api.add_conversation(status="RUNNING")

    assert convo("stop", conversation_id, "--json").json() == {
        "status": "ok",
        "conversation_id": conversation_id,
        "message": "Conversation stopped",
        "conversation_status": "STOPPED",
    }
    assert convo("start", conversation_id, "--json").json()["conversation_status"] == "STARTING"
    assert convo("rename", conversation_id, "T", "--json").json() == {
        "status": "ok",
        "conversation_id": conversation_id,
        "title": "T",
    }
    assert convo("delete", conversation_id, "--json").json() == {"status": "ok", "conversation_id": conversation_id}


def test_start_of_an_archived_conversation_exits_3(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    result = convo("start", fake_api.add_conversation(status="ARCHIVED"), "--wait")
    assert result.code == 3
    assert result.stderr.startswith("convo: CONVERSATION$NOT_STARTABLE (HTTP 409): ")


def test_start_wait_follows_the_new_run(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    conversation_id = fake_api.add_conversation(status="STOPPED")

    result = convo("start", conversation_id, "--wait", *FAST)

    assert result.code == 0
    assert result.stdout.splitlines()[0] == f"Conversation {conversation_id}"
    assert "RUNNING after" in result.stdout


# -- settings and quota ----------------------------------------------------------------------------
def test_settings_show(convo: RunConvo) -> None:
    result = convo("settings", "show")

    assert result.code == 0
    assert "llm model          anthropic/claude-sonnet-4" in result.stdout
    assert "llm api key        set" in result.stdout
    assert "sk-initial" not in result.stdout
    assert convo("settings", "show", "--json").json()["llm_api_key_set"] is True


def test_settings_set_sends_secrets_and_never_prints_them(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    result = convo(
        "settings",
        "set",
        "--llm-model",
        "openai/gpt-5",
        "--llm-api-key",
        "sk-very-secret",
        "--github-token",
        "ghp_very_secret",
        "--provider-token",
        "enterprise=ent_very_secret",
        "--confirmation-mode",
        "on",
        "--max-iterations",
        "40",
    )

    assert result.code == 0, result.stderr
    assert fake_api.secrets == {
        "llm_api_key": "sk-very-secret",
        "provider_tokens": {"github": "ghp_very_secret", "enterprise": "ent_very_secret"},
    }
    assert fake_api.settings["llm_model"] == "openai/gpt-5"
    assert (fake_api.settings["confirmation_mode"], fake_api.settings["max_iterations"]) == (True, 40)
    assert "very_secret" not in result.stdout + result.stderr and "very-secret" not in result.stdout
    assert "provider tokens    enterprise set, github set" in result.stdout


def test_settings_set_reads_a_secret_from_stdin(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    result = convo("settings", "set", "--llm-api-key", "-", "--json", stdin="sk-from-stdin\n")

    assert result.code == 0
    assert fake_api.secrets["llm_api_key"] == "sk-from-stdin"
    assert result.json()["llm_api_key_set"] is True
    assert "sk-from-stdin" not in result.stdout


def test_settings_set_needs_something_to_set(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    result = convo("settings", "set")
    assert result.code == 2
    assert "at least one setting" in result.stderr
    assert fake_api.requests == []


def test_malformed_provider_token_is_refused_without_echoing_it(convo: RunConvo) -> None:
    result = convo("settings", "set", "--provider-token", "ghp_secret_without_a_provider")
    assert result.code == 2
    assert "ghp_secret" not in result.stdout + result.stderr


def test_quota(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    fake_api.add_conversation(status="RUNNING")

    assert convo("quota").stdout.splitlines() == [
        "active conversations: 1 of 3 (2 available)",
        "at the limit (close_oldest): a new conversation closes the least recently active one",
    ]
    assert convo("quota", "--json").json() == {"limit": 3, "active": 1, "available": 2, "policy": "close_oldest"}


# -- endpoint, key, usage --------------------------------------------------------------------------
def test_common_options_go_before_or_after_the_command(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    before = convo("--json", "--endpoint", fake_api.url.removesuffix("/api"), "quota")
    after = convo("quota", "--endpoint", fake_api.url + "/", "--json")
    assert before.json() == after.json()


def test_endpoint_flag_wins_over_the_environment(
    convo: RunConvo, fake_api: FakeConversationsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("CONVO_ENDPOINT", dead)

    assert convo("quota", "--endpoint", fake_api.url).code == 0
    unreachable = convo("quota")
    assert unreachable.code == 3
    assert f"cannot reach {dead}/api/quota" in unreachable.stderr
    assert "Connection refused" in unreachable.stderr
    assert convo("quota", "--json").json()["msg_id"] == "CLIENT$UNREACHABLE"


def test_api_key_from_flag_or_environment(convo: RunConvo, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeConversationsApi(api_key="key-1").running() as fake:
        assert convo("quota", "--endpoint", fake.url).code == 3
        assert convo("quota", "--endpoint", fake.url, "--api-key", "key-1").code == 0
        monkeypatch.setenv("CONVO_API_KEY", "key-1")
        assert convo("quota", "--endpoint", fake.url).code == 0
        assert {request.headers.get("authorization") for request in fake.requests} == {None, "Bearer key-1"}


def test_bad_endpoint_is_a_usage_error(convo: RunConvo) -> None:
    result = convo("quota", "--endpoint", "localhost:3000")
    assert result.code == 2
    assert "endpoint must be an http:// or https:// URL" in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        [],
        ["frobnicate"],
        ["show"],
        ["create", "--wait-timeout", "soon"],
        ["settings", "set", "--confirmation-mode", "maybe"],
    ],
)
def test_usage_errors_exit_2(convo: RunConvo, arguments: list[str]) -> None:
    result = convo(*arguments)
    assert result.code == 2
    assert "usage: convo" in result.stderr


def test_settings_alone_shows_its_commands(convo: RunConvo) -> None:
    result = convo("settings")
    assert result.code == 2
    assert result.stderr.startswith("usage: convo settings")
    assert "show" in result.stderr and "set" in result.stderr


def test_help_and_version_exit_0(convo: RunConvo) -> None:
    help_result = convo("--help")
    assert help_result.code == 0
    assert "exit codes:" in help_result.stdout
    assert "CONVO_ENDPOINT" in help_result.stdout
    version = convo("--version")
    assert (version.code, version.stdout) == (0, "convo 0.1.0\n")


def test_json_output_is_valid_for_every_command(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    conversation_id = fake_api.add_conversation(status="RUNNING")
    for arguments in (
        ["list"],
        ["show", conversation_id],
        ["quota"],
        ["settings", "show"],
        ["settings", "set", "--agent", "CodeActAgent"],
        ["rename", conversation_id, "x"],
        ["stop", conversation_id],
        ["start", conversation_id],
        ["delete", conversation_id],
        ["create", "--repo", "user/repo"],
    ):
        result = convo(*arguments, "--json")
        assert result.code == 0, (arguments, result.stderr)
        json.loads(result.stdout)


def test_settings_set_replaces_the_authorized_event_sources(convo: RunConvo, fake_api: FakeConversationsApi) -> None:
    result = convo("settings", "set", "--event-source", "acme.ci", "--event-source", "acme.tracker")
    assert result.code == 0, result.stderr
    assert fake_api.settings["authorized_event_sources"] == ["acme.ci", "acme.tracker"]
    assert "event sources      acme.ci, acme.tracker" in result.stdout
    assert convo("settings", "set", "--no-event-sources").code == 0
    assert fake_api.settings["authorized_event_sources"] == []
