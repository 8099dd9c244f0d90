"""The sealed sandbox token (sandbox/openhands_sandbox/task_token.py): the stdlib SigV4 signer
against botocore's own, and the whole opening path against a real moto server over HTTP with
devstack's container credentials endpoint."""

from __future__ import annotations

import base64
import datetime
import secrets
from collections.abc import Iterator
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials
from moto.server import ThreadedMotoServer
from openhands_sandbox import task_token
from openhands_sandbox.settings import SandboxSettings, SettingsError
from openhands_sandbox.task_token import Credentials, TaskTokenError, open_sandbox_token, sign_request
from openhands_sandbox.warm import PoolCredential

from devstack.local_aws import FAKE_CREDENTIALS
from devstack.task_credentials import TaskCredentialsServer

REGION = "eu-west-1"
NOW = datetime.datetime(2026, 12, 1, 19, 30, 5, tzinfo=datetime.UTC)


def botocore_headers(
    method: str, url: str, headers: dict[str, str], body: bytes, credentials: Credentials, service: str
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    signer = SigV4Auth(
        BotocoreCredentials(credentials.access_key_id, credentials.secret_access_key, credentials.session_token),
        service,
        REGION,
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        signer.add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    ("url", "session_token"),
    [
        ("https://kms.eu-west-1.amazonaws.com/", "FwoGZXIvYXdzE-session/token+with=chars"),
        ("http://127.0.0.1:4566/", None),
        ("https://example.internal:8443/some/path?b=2&a=1&a=0&empty=", "tok"),
    ],
)
def test_the_signature_is_botocores_for_the_same_request(url: str, session_token: str | None) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", session_token)
    body = b'{"CiphertextBlob": "AQID", "EncryptionContext": {"purpose": "sandbox-token"}}'
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.Decrypt"}
    ours = sign_request("POST", url, headers, body, credentials, region=REGION, service="kms", now=NOW)
    theirs = botocore_headers("POST", url, headers, body, credentials, "kms")
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"] == "20261201T193005Z"
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token") == session_token


def test_a_changed_body_or_key_changes_the_signature() -> None:
    credentials = Credentials("AKID", "secret-one")
    url, headers = "https://kms.eu-west-1.amazonaws.com/", {"X-Amz-Target": "TrentService.Decrypt"}
    first = sign_request("POST", url, headers, b"{}", credentials, region=REGION, service="kms", now=NOW)
    other_body = sign_request("POST", url, headers, b"{ }", credentials, region=REGION, service="kms", now=NOW)
    other_key = sign_request(
        "POST", url, headers, b"{}", Credentials("AKID", "secret-two"), region=REGION, service="kms", now=NOW
    )
    assert len({first["Authorization"], other_body["Authorization"], other_key["Authorization"]}) == 3


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/abc"}, "http://169.254.170.2/v2/credentials/abc"),
        ({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/creds"}, "http://127.0.0.1:9/creds"),
        ({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "https://creds.example/x"}, "https://creds.example/x"),
    ],
)
def test_the_credentials_endpoint_is_the_ones_the_sdks_accept(environ: dict[str, str], expected: str) -> None:
    assert task_token.credentials_url(environ) == expected


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "@evil.example/x"},
        {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://10.0.0.5/creds"},
        {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "file:///etc/passwd"},
    ],
)
def test_any_other_credentials_endpoint_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(TaskTokenError):
        task_token.credentials_url(environ)


@pytest.fixture(scope="module")
def moto_kms() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def credentials_server() -> Iterator[TaskCredentialsServer]:
    server = TaskCredentialsServer(FAKE_CREDENTIALS, "arn:aws:iam::123456789012:role/sandbox-task")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def sealed(endpoint: str, token: str, conversation_id: str, context: dict[str, str] | None = None) -> str:
    kms = boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    key = kms.create_key(Description="sandbox tokens")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(
        KeyId=key,
        Plaintext=token.encode(),
        EncryptionContext=context or {"purpose": "sandbox-token", "conversation_id": conversation_id},
    )["CiphertextBlob"]
    return base64.b64encode(blob).decode()


def task_environ(endpoint: str, server: TaskCredentialsServer, authorization: str) -> dict[str, str]:
    return server.task_environment(authorization, endpoint, REGION)


def test_the_task_opens_its_token_over_http_with_its_own_credentials(
    moto_kms: str, credentials_server: TaskCredentialsServer
) -> None:
    conversation_id = secrets.token_hex(16)
    token = f"{conversation_id}.{secrets.token_urlsafe(32)}"
    ciphertext = sealed(moto_kms, token, conversation_id)
    assert token not in ciphertext and token.split(".")[1] not in base64.b64decode(ciphertext).decode("latin-1")
    environ = task_environ(moto_kms, credentials_server, credentials_server.issue())
    assert open_sandbox_token(ciphertext, conversation_id, environ) == token


def test_another_conversations_context_or_an_unknown_task_cannot_open_it(
    moto_kms: str, credentials_server: TaskCredentialsServer
) -> None:
    conversation_id, other = secrets.token_hex(16), secrets.token_hex(16)
    ciphertext = sealed(moto_kms, f"{conversation_id}.secret-part", conversation_id)
    authorization = credentials_server.issue()
    with pytest.raises(TaskTokenError, match="KMS refused"):
        open_sandbox_token(ciphertext, other, task_environ(moto_kms, credentials_server, authorization))
    credentials_server.revoke(authorization)
    with pytest.raises(TaskTokenError, match="HTTP 403"):
        open_sandbox_token(ciphertext, conversation_id, task_environ(moto_kms, credentials_server, authorization))


def test_settings_open_the_ciphertext_and_take_every_credential_variable_out(
    moto_kms: str, credentials_server: TaskCredentialsServer
) -> None:
    conversation_id = secrets.token_hex(16)
    token = f"{conversation_id}.{secrets.token_urlsafe(32)}"
    environ = {
        "CONVERSATION_ID": conversation_id,
        "SANDBOX_API_URL": "http://127.0.0.1:9/sandbox",
        "SANDBOX_TOKEN_CIPHERTEXT": sealed(moto_kms, token, conversation_id),
        "PATH": "/usr/bin",
        **task_environ(moto_kms, credentials_server, credentials_server.issue()),
    }
    settings = SandboxSettings.from_environ(environ)
    assert settings.token == token
    assert not set(environ) & set(task_token.TASK_CREDENTIAL_VARIABLES)
    assert "PATH" in environ and "AWS_REGION" in environ  # the region is no secret


def test_settings_still_accept_a_clear_token_and_refuse_a_ciphertext_without_credentials() -> None:
    conversation_id = secrets.token_hex(16)
    base = {"CONVERSATION_ID": conversation_id, "SANDBOX_API_URL": "http://127.0.0.1:9/sandbox"}
    assert SandboxSettings.from_environ({**base, "SANDBOX_TOKEN": "tok"}).token == "tok"
    with pytest.raises(SettingsError, match="credentials endpoint"):
        SandboxSettings.from_environ({**base, "SANDBOX_TOKEN_CIPHERTEXT": "AQID", "AWS_REGION": REGION})
    with pytest.raises(SettingsError, match="neither"):
        SandboxSettings.from_environ(dict(base))


def test_a_pool_sandbox_opens_its_sealed_credential_and_keeps_the_way_to_open_its_assignment(
    moto_kms: str, credentials_server: TaskCredentialsServer
) -> None:
    """`SANDBOX_POOL_TOKEN_CIPHERTEXT` opens under the pool sandbox's own id only; the task's
    credential variables stay for the assignment's sealed token (no child gets AWS_* anyway)."""
    sandbox_id = "pool-" + secrets.token_hex(12)
    credential = f"{sandbox_id}.{secrets.token_urlsafe(32)}"
    context = {"purpose": "sandbox-token", "pool_sandbox_id": sandbox_id}
    ciphertext = sealed(moto_kms, credential, "", context)
    environ = {
        "SANDBOX_POOL_ID": sandbox_id,
        "SANDBOX_POOL_TOKEN_CIPHERTEXT": ciphertext,
        "SANDBOX_API_URL": "http://127.0.0.1:9/sandbox",
        **task_environ(moto_kms, credentials_server, credentials_server.issue()),
    }
    pool = PoolCredential.from_environ(environ)
    assert (pool.sandbox_id, pool.credential) == (sandbox_id, credential)
    assert "SANDBOX_POOL_TOKEN_CIPHERTEXT" not in environ and "SANDBOX_POOL_ID" not in environ
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" in environ
    # Under another pool sandbox's id, or read as a conversation's token, KMS refuses it.
    other = {**environ, "SANDBOX_POOL_ID": "pool-" + secrets.token_hex(12), "SANDBOX_POOL_TOKEN_CIPHERTEXT": ciphertext}
    with pytest.raises(SettingsError, match="KMS refused"):
        PoolCredential.from_environ(other)
    with pytest.raises(TaskTokenError, match="KMS refused"):
        open_sandbox_token(ciphertext, sandbox_id, environ)
