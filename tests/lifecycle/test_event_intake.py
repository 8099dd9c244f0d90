"""CreateConversation events: bus -> rule (trusted sources only) -> queue -> EventIntakeFunction
-> ConversationService.create, with refusals in the dead-letter queue with their reason."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from conversation_service.logic.conversations import ConversationService
from conversation_service.logic.event_intake import FINAL_ATTEMPT
from conversation_service.models.errors import ConversationConflict

from devstack.template_resources import load_template
from tests.lifecycle.conftest import CONVERSATIONS, OTHER_USER, Lifecycle

TRUSTED = "openhands.integrations"


@pytest.fixture(autouse=True)
def other_user_authorised_the_integration(life: Lifecycle) -> None:
    life.configure(OTHER_USER, authorized_event_sources=[TRUSTED])


def detail(user: str = OTHER_USER, **fields: Any) -> dict[str, Any]:
    return {"schema_version": "1", "user_id": user, "request": {"initial_user_msg": "triage issue #7"}, **fields}


def conversations_of(life: Lifecycle, user: str) -> list[dict[str, Any]]:
    status, page = life.call("GET", CONVERSATIONS, user=user, query={"limit": "100"})
    assert status == 200, page
    return list(page["results"])


def envelope(source: str, body: dict[str, Any], detail_type: str = "CreateConversation") -> str:
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": "123456789012",
            "time": "2026-01-01T00:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": body,
        }
    )


def deliver(life: Lifecycle, *bodies: str) -> dict[str, Any]:
    """Messages put on the queue directly (not through the rule), then one poll."""
    sqs = life.session.client("sqs")
    url = life.resources.physical["CreateConversationQueue"]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    return life.poll_intake()


def test_a_trusted_event_creates_a_conversation_for_the_user_it_names(life: Lifecycle) -> None:
    life.put_event(TRUSTED, "CreateConversation", detail(idempotency_key="ticket-7"))
    result = life.poll_intake()
    assert result == {"batchItemFailures": [], "records": 1}
    (created,) = conversations_of(life, OTHER_USER)
    assert created["conversation_status"] == "STARTING" and created["trigger"] == "api"
    assert conversations_of(life, "user-1") == []
    life.running_task(created["conversation_id"])  # the same workflow as the HTTP API's
    assert life.dead_letters() == []
    # The same key again (a retried integration) creates nothing more.
    life.put_event(TRUSTED, "CreateConversation", detail(idempotency_key="ticket-7"))
    life.poll_intake()
    assert len(conversations_of(life, OTHER_USER)) == 1


def test_a_redelivered_event_creates_one_conversation(life: Lifecycle) -> None:
    body = envelope(TRUSTED, detail())
    assert deliver(life, body, body)["batchItemFailures"] == []
    assert len(conversations_of(life, OTHER_USER)) == 1


def test_an_untrusted_source_is_not_routed_and_is_refused_if_queued_anyway(life: Lifecycle) -> None:
    life.put_event("someone.else", "CreateConversation", detail())
    assert life.poll_intake()["records"] == 0  # the rule did not route it
    result = deliver(life, envelope("someone.else", detail()))
    assert result["batchItemFailures"] == []  # final: not retried
    (dead,) = life.dead_letters()
    assert dead["reason"]["msg_id"] == "EVENT$UNTRUSTED_SOURCE"
    assert dead["event"]["source"] == "someone.else"
    assert conversations_of(life, OTHER_USER) == []


@pytest.mark.parametrize(
    ("body", "msg_id"),
    [
        (envelope(TRUSTED, detail(user="no-settings")), "CONFIGURATION$SETTINGS_NOT_FOUND"),
        (envelope(TRUSTED, detail(request={"initial_user_msg": "x", "surprise": 1})), "ERROR$VALIDATION"),
        (envelope(TRUSTED, {**detail(), "schema_version": "2"}), "ERROR$VALIDATION"),
        (envelope(TRUSTED, {"request": {}}), "ERROR$VALIDATION"),
        (
            envelope(TRUSTED, detail(request={"repository": "https://git.example.net/team/app"})),
            "STATUS$GIT_REPOSITORY_NOT_ALLOWED",
        ),
        (envelope(TRUSTED, detail(), detail_type="DeleteEverything"), "EVENT$UNKNOWN_DETAIL_TYPE"),
        ("this is not json", "EVENT$MALFORMED"),
    ],
    ids=[
        "settings missing",
        "unknown field",
        "schema version",
        "no user",
        "repository refused",
        "detail type",
        "not json",
    ],
)
def test_business_refusals_go_to_the_dead_letter_queue_with_the_reason(life: Lifecycle, body: str, msg_id: str) -> None:
    result = deliver(life, body)
    assert result["batchItemFailures"] == []
    (dead,) = life.dead_letters()
    assert dead["reason"]["msg_id"] == msg_id, dead
    assert dead["reason"]["message"]
    assert dead["message_id"] and dead["refused_at"]
    assert life.poll_intake()["records"] == 0  # not retried
    assert conversations_of(life, OTHER_USER) == []


def test_the_reason_names_the_field_but_never_echoes_its_value(life: Lifecycle) -> None:
    secret = "sk-mcp-secret-value"
    request = {"mcp_config": {"shttp_servers": [{"url": "https://mcp.example.com", "api_key": secret, "x": 1}]}}
    deliver(life, envelope(TRUSTED, detail(request=request)))
    (dead,) = life.dead_letters()
    assert dead["reason"]["msg_id"] == "ERROR$VALIDATION"
    assert "mcp_config" in dead["reason"]["message"]
    assert secret not in json.dumps(dead["reason"])


def test_a_transient_failure_is_left_to_sqs_to_retry(life: Lifecycle, monkeypatch: pytest.MonkeyPatch) -> None:
    def busy(*_: Any, **__: Any) -> Any:
        raise ConversationConflict()

    with monkeypatch.context() as patched:
        patched.setattr(ConversationService, "create", busy)
        result = deliver(life, envelope(TRUSTED, detail()))
    assert len(result["batchItemFailures"]) == 1
    assert life.dead_letters() == []
    assert life.poll_intake()["batchItemFailures"] == []  # delivered again, and now it works
    assert len(conversations_of(life, OTHER_USER)) == 1


def test_the_template_routes_only_the_trusted_sources_to_the_function() -> None:
    template = load_template()
    resources = template["Resources"]
    rule = resources["CreateConversationRule"]["Properties"]
    assert rule["EventPattern"] == {"source": {"Ref": "TrustedEventSources"}, "detail-type": ["CreateConversation"]}
    assert rule["EventBusName"] == {"Ref": "ConversationEventBus"}
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["CreateConversationQueue", "Arn"]}
    function = resources["EventIntakeFunction"]["Properties"]
    assert function["Environment"]["Variables"]["TRUSTED_EVENT_SOURCES"] == {
        "Fn::Join": [",", {"Ref": "TrustedEventSources"}]
    }
    assert function["Events"]["CreateConversation"]["Properties"]["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"
    ]
    queue = resources["CreateConversationQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["CreateConversationDeadLetterQueue", "Arn"]}
    policy = resources["CreateConversationQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert policy["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["CreateConversationRule", "Arn"]}}}


def test_a_user_who_did_not_authorise_the_source_gets_no_conversation_from_it(life: Lifecycle) -> None:
    """user-1 never connected the integration: its event naming user-1 creates nothing."""
    status, settings = life.call("GET", "/api/settings", user="user-1")
    assert status == 200 and settings["authorized_event_sources"] == []
    assert deliver(life, envelope(TRUSTED, detail(user="user-1")))["batchItemFailures"] == []
    (dead,) = life.dead_letters()
    assert dead["reason"]["msg_id"] == "EVENT$SOURCE_NOT_AUTHORISED"
    assert conversations_of(life, "user-1") == []
    # Authorised, the same event creates it; revoked again ([]), the next one does not.
    life.configure("user-1", authorized_event_sources=[TRUSTED])
    assert deliver(life, envelope(TRUSTED, detail(user="user-1")))["batchItemFailures"] == []
    assert len(conversations_of(life, "user-1")) == 1 and life.dead_letters() == []
    life.configure("user-1", authorized_event_sources=[])
    deliver(life, envelope(TRUSTED, detail(user="user-1")))
    assert [item["reason"]["msg_id"] for item in life.dead_letters()] == ["EVENT$SOURCE_NOT_AUTHORISED"]


def test_the_settings_field_is_validated(life: Lifecycle) -> None:
    for refused in (["has space"], [""], ["x" * 257], ["a"] * 21, "openhands.integrations"):
        status, answer = life.call("POST", "/api/settings", {"authorized_event_sources": refused})
        assert status == 422 and answer["status"] == "error" and answer["msg_id"] == "ERROR$VALIDATION", refused


SECRETS = ("sk-mcp-dlq-secret-1", "ghp_dlq_url_secret_2", "integration-token-3")


def secret_event(user: str = "no-settings", *, valid: bool = False) -> str:
    """An event carrying secrets: an MCP key, and unless `valid`, a token in the repository URL and
    an extra field."""
    request: dict[str, Any] = {
        "initial_user_msg": "hello",
        "mcp_config": {"shttp_servers": [{"url": "https://mcp.example.com", "api_key": SECRETS[0]}]},
    }
    if valid:
        return envelope(TRUSTED, detail(user=user, request=request))
    request["repository"] = f"https://x:{SECRETS[1]}@github.com/team/app"
    return envelope(TRUSTED, {**detail(user=user, request=request), "integration_token": SECRETS[2]})


def test_dead_letter_copies_carry_no_secret(life: Lifecycle) -> None:
    deliver(life, secret_event())  # refused: the extra field, or no settings
    deliver(life, "not json " + SECRETS[0])
    dead = life.dead_letters()
    assert len(dead) == 2
    text = json.dumps(dead)
    assert not [secret for secret in SECRETS if secret in text], text
    assert dead[0]["event"]["detail"]["request"]["mcp_config"] == "[redacted]"
    assert dead[0]["event"]["detail"]["request"]["initial_user_msg"] == "hello"  # the rest is kept
    assert dead[1]["event"] == {"unparsed_body_length": len("not json " + SECRETS[0])}


def test_a_message_failing_at_its_final_attempt_is_dead_lettered_redacted(
    life: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(*_: Any, **__: Any) -> Any:
        raise ConversationConflict()

    sqs = life.session.client("sqs")
    sqs.send_message(
        QueueUrl=life.resources.physical["CreateConversationQueue"], MessageBody=secret_event(OTHER_USER, valid=True)
    )
    with monkeypatch.context() as patched:
        patched.setattr(ConversationService, "create", busy)
        results = [life.poll_intake() for _ in range(FINAL_ATTEMPT)]
    assert [len(result["batchItemFailures"]) for result in results] == [1] * (FINAL_ATTEMPT - 1) + [0]
    (dead,) = life.dead_letters()
    assert dead["reason"]["msg_id"] == "EVENT$RETRIES_EXHAUSTED"
    assert not [secret for secret in SECRETS if secret in json.dumps(dead)]
    assert life.poll_intake()["records"] == 0  # gone from the queue


def test_the_bus_refuses_create_conversation_from_unlisted_principals() -> None:
    """moto does not evaluate bus policies: the statement is checked as written."""
    template = load_template()
    assert template["Parameters"]["CreateConversationPrincipals"]["Type"] == "CommaDelimitedList"
    deny, allow = template["Resources"]["ConversationEventBus"]["Properties"]["Policy"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "events:PutEvents"
    listed, nobody = deny["Condition"]["Fn::If"][1:]
    assert deny["Condition"]["Fn::If"][0] == "HasCreateConversationPrincipals"
    assert listed == {
        "StringEquals": {"events:detail-type": "CreateConversation"},
        "ArnNotLike": {"aws:PrincipalArn": {"Ref": "CreateConversationPrincipals"}},
    }
    assert nobody == {"StringEquals": {"events:detail-type": "CreateConversation"}}  # none listed: none may
    allowed = allow["Fn::If"][1]
    assert allowed["Condition"]["ArnLike"] == {"aws:PrincipalArn": {"Ref": "CreateConversationPrincipals"}}
    redrive = template["Resources"]["CreateConversationQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] > FINAL_ATTEMPT  # the function dead-letters (redacted) first
