"""The sandbox token, opened inside the task: KMS Decrypt with the task role's own credentials.

The control plane never hands the token to ECS in clear (anyone with `ecs:DescribeTasks` or
CloudTrail read access could read a container override). It passes `SANDBOX_TOKEN_CIPHERTEXT`:
the token sealed by KMS under a key only the sandbox task role may `Decrypt`, with the
encryption context `{"purpose": "sandbox-token", "conversation_id": <id>}`. The bootstrap opens
it here, before any repository code runs, with the credentials ECS serves the task:

- `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (Fargate): `http://169.254.170.2<uri>`;
- `AWS_CONTAINER_CREDENTIALS_FULL_URI` (+ `AWS_CONTAINER_AUTHORIZATION_TOKEN` or
  `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`): any https URL, or http to loopback or the ECS/EKS
  link-local addresses, as the AWS SDKs allow (devstack serves its test credentials this way).

The KMS endpoint is `AWS_ENDPOINT_URL_KMS`, else `AWS_ENDPOINT_URL`, else
`https://kms.<AWS_REGION>.amazonaws.com`. Only the standard library: the bootstrap has no boto3.
Every one of these variables is taken out of the bootstrap's environment (`consume`), so no
child process can inherit them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from openhands_sandbox.http_client import http_request, is_http_url, open_http

TOKEN_PURPOSE = "sandbox-token"  # noqa: S105 - the encryption context's purpose
CIPHERTEXT_VARIABLE = "SANDBOX_TOKEN_CIPHERTEXT"
POOL_CIPHERTEXT_VARIABLE = "SANDBOX_POOL_TOKEN_CIPHERTEXT"
"""A warm pool sandbox's credential, sealed the same way for `{"purpose", "pool_sandbox_id"}`."""
ECS_CREDENTIALS_HOST = "169.254.170.2"
# The link-local hosts an SDK accepts over plain http for a FULL_URI (ECS, EKS pod identity).
_LINK_LOCAL_CREDENTIAL_HOSTS = frozenset({"169.254.170.2", "169.254.170.23", "fd00:ec2::23"})
# What the bootstrap takes out of its environment once the token is open: the task's way to its
# AWS identity and where it used it. (Names only; wall's clean environment drops every AWS_* too.)
TASK_CREDENTIAL_VARIABLES = (
    CIPHERTEXT_VARIABLE,
    POOL_CIPHERTEXT_VARIABLE,
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ENDPOINT_URL_KMS",
    "AWS_ENDPOINT_URL",
)
_SIGNED_HEADERS_SKIPPED = frozenset({"authorization", "connection", "expect", "user-agent", "x-amzn-trace-id"})
_RETRY_DELAYS_SECONDS = (0.2, 0.5, 1.0, 2.0)
_TIMEOUT_SECONDS = 5.0
_MAX_RESPONSE_BYTES = 64 * 1024


class TaskTokenError(ValueError):
    """The sealed token could not be opened; the message names the step, never a secret."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


# --- Signature Version 4 -------------------------------------------------------------------------


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    encoded = sorted((urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    *,
    region: str,
    service: str,
    now: datetime.datetime,
) -> dict[str, str]:
    """The request's headers with `X-Amz-Date`, `X-Amz-Security-Token` and `Authorization` added:
    AWS Signature Version 4 as botocore's `SigV4Auth` computes it (tests compare the two)."""
    parts = urllib.parse.urlsplit(url)
    signed = {name: value for name, value in headers.items() if name.lower() not in {"authorization", "x-amz-date"}}
    timestamp = now.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    signed["X-Amz-Date"] = timestamp
    if credentials.session_token:
        signed["X-Amz-Security-Token"] = credentials.session_token
    canonical: dict[str, str] = {}
    for name, value in signed.items():
        if name.lower() not in _SIGNED_HEADERS_SKIPPED:
            canonical[name.lower()] = " ".join(value.split())
    if "host" not in canonical:
        default_port = {"http": 80, "https": 443}[parts.scheme]
        canonical["host"] = (parts.hostname or "") if parts.port in (None, default_port) else parts.netloc
    names = sorted(canonical)
    signed_headers = ";".join(names)
    canonical_request = "\n".join(
        [
            method.upper(),
            urllib.parse.quote(parts.path or "/", safe="/~"),
            _canonical_query(parts.query),
            "".join(f"{name}:{canonical[name]}\n" for name in names),
            signed_headers,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{timestamp[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(f"AWS4{credentials.secret_access_key}".encode(), timestamp[:8])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    signed["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return signed


# --- the task's credentials ------------------------------------------------------------------------


def credentials_url(environ: Mapping[str, str]) -> str:
    relative = environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
    if relative:
        if not relative.startswith("/"):
            raise TaskTokenError("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must start with /")
        return f"http://{ECS_CREDENTIALS_HOST}{relative}"
    full = environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
    if not full:
        raise TaskTokenError(
            f"{CIPHERTEXT_VARIABLE} is set but the task has no credentials endpoint "
            "(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI)"
        )
    parts = urllib.parse.urlsplit(full)
    if parts.scheme == "https" and parts.hostname:
        return full
    if parts.scheme == "http" and parts.hostname and _is_trusted_plain_http_host(parts.hostname):
        return full
    raise TaskTokenError("AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to loopback or the ECS/EKS host")


def _is_trusted_plain_http_host(host: str) -> bool:
    if host in _LINK_LOCAL_CREDENTIAL_HOSTS or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _authorization_token(environ: Mapping[str, str]) -> str | None:
    path = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as error:
            raise TaskTokenError(f"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE cannot be read: {error.strerror}") from None
    return environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") or None


def container_credentials(environ: Mapping[str, str], opener: Opener | None = None) -> Credentials:
    url = credentials_url(environ)
    headers = {"Accept": "application/json"}
    if (authorization := _authorization_token(environ)) and not environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        if "\r" in authorization or "\n" in authorization:
            raise TaskTokenError("AWS_CONTAINER_AUTHORIZATION_TOKEN holds a line break")
        headers["Authorization"] = authorization
    status, body = _with_retries((opener or _open), "GET", url, headers, None, "the task's credentials endpoint")
    if status != 200:
        raise TaskTokenError(f"the task's credentials endpoint answered HTTP {status}")
    try:
        document = json.loads(body)
        return Credentials(
            access_key_id=str(document["AccessKeyId"]),
            secret_access_key=str(document["SecretAccessKey"]),
            session_token=str(document["Token"]) if document.get("Token") else None,
        )
    except (ValueError, KeyError, TypeError):
        raise TaskTokenError("the task's credentials endpoint answered without credentials") from None


# --- KMS Decrypt ---------------------------------------------------------------------------------------


def kms_endpoint(environ: Mapping[str, str], region: str) -> str:
    endpoint = environ.get("AWS_ENDPOINT_URL_KMS") or environ.get("AWS_ENDPOINT_URL") or ""
    if endpoint:
        if not is_http_url(endpoint):
            raise TaskTokenError("the KMS endpoint must be an http(s) URL")
        return endpoint.rstrip("/") + "/"
    return f"https://kms.{region}.amazonaws.com/"


def task_region(environ: Mapping[str, str]) -> str:
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or ""
    if not region or not all(c.isalnum() or c == "-" for c in region):
        raise TaskTokenError("a sealed token is set but AWS_REGION is not (or is not a region name)")
    return region


def encryption_context(conversation_id: str) -> dict[str, str]:
    """What the control plane sealed the token with; KMS refuses any other context."""
    return {"purpose": TOKEN_PURPOSE, "conversation_id": conversation_id}


def pool_encryption_context(sandbox_id: str) -> dict[str, str]:
    """What the pool reconciler sealed a pool sandbox's credential with."""
    return {"purpose": TOKEN_PURPOSE, "pool_sandbox_id": sandbox_id}


def open_sandbox_token(
    ciphertext: str,
    conversation_id: str,
    environ: Mapping[str, str],
    *,
    opener: Opener | None = None,
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> str:
    """The clear sandbox token: the task's credentials, then one signed KMS `Decrypt`."""
    return open_sealed(ciphertext, encryption_context(conversation_id), conversation_id, environ, opener, clock)


def open_sealed(
    ciphertext: str,
    context: dict[str, str],
    owner_id: str,
    environ: Mapping[str, str],
    opener: Opener | None = None,
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> str:
    """A secret sealed for this task under ``context``; it must read ``<owner_id>.<secret>``."""
    try:
        blob = base64.b64decode(ciphertext, validate=True)
    except ValueError:
        raise TaskTokenError("the sealed token is not base64") from None
    region = task_region(environ)
    credentials = container_credentials(environ, opener)
    url = kms_endpoint(environ, region)
    body = json.dumps({"CiphertextBlob": base64.b64encode(blob).decode(), "EncryptionContext": context}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.Decrypt"}

    def signed_open(method: str, target: str, plain: Mapping[str, str], data: bytes | None) -> tuple[int, bytes]:
        # Signed again for each attempt: a retry gets a fresh timestamp.
        signed = sign_request(
            method, target, plain, data or b"", credentials, region=region, service="kms", now=clock()
        )
        return (opener or _open)(method, target, signed, data)

    status, answer = _with_retries(signed_open, "POST", url, headers, body, "KMS")
    if status != 200:
        raise TaskTokenError(f"KMS refused to decrypt the sandbox token: HTTP {status} {_kms_error(answer)}")
    try:
        plaintext = base64.b64decode(json.loads(answer)["Plaintext"])
        token = plaintext.decode()
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise TaskTokenError("KMS answered without a usable plaintext") from None
    if not token.startswith(f"{owner_id}.") or not token.isprintable():
        raise TaskTokenError("the sealed token is not this task's")
    return token


def consume(environ: MutableMapping[str, str], conversation_id: str, *, opener: Opener | None = None) -> str | None:
    """`SANDBOX_TOKEN_CIPHERTEXT` opened (None when the task has none), and every variable that
    led to it taken out of `environ` whatever the outcome."""
    ciphertext = environ.get(CIPHERTEXT_VARIABLE, "")
    snapshot = dict(environ)
    for name in TASK_CREDENTIAL_VARIABLES:
        environ.pop(name, None)
    if not ciphertext:
        return None
    return open_sandbox_token(ciphertext, conversation_id, snapshot, opener=opener)


def consume_pool_credential(environ: MutableMapping[str, str], sandbox_id: str, *, opener: Opener | None = None) -> str:
    """`SANDBOX_POOL_TOKEN_CIPHERTEXT` opened and taken out of `environ`. The task's credential
    variables stay for the assignment's sealed token (`consume` removes them when it opens that);
    no child gets any `AWS_*` variable meanwhile (the clean environment of processes.py)."""
    ciphertext = environ.pop(POOL_CIPHERTEXT_VARIABLE, "")
    if not ciphertext:
        raise TaskTokenError(f"{POOL_CIPHERTEXT_VARIABLE} is not set")
    return open_sealed(ciphertext, pool_encryption_context(sandbox_id), sandbox_id, environ, opener)


def _kms_error(answer: bytes) -> str:
    try:
        document = json.loads(answer)
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    kind = str(document.get("__type", "")).rsplit("#", 1)[-1][:100]
    message = str(document.get("message") or document.get("Message") or "")[:300]
    return f"({kind}: {message})" if message else f"({kind})"


# --- HTTP ------------------------------------------------------------------------------------------------

Opener = Callable[[str, str, Mapping[str, str], bytes | None], tuple[int, bytes]]


def _open(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> tuple[int, bytes]:
    request = http_request(url, method=method, body=body, headers=headers)
    try:
        with open_http(request, timeout=_TIMEOUT_SECONDS) as response:
            return int(response.status), response.read(_MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), error.read(_MAX_RESPONSE_BYTES)


def _with_retries(
    opener: Opener, method: str, url: str, headers: Mapping[str, str], body: bytes | None, what: str
) -> tuple[int, bytes]:
    """Connection errors, throttling and 5xx are retried a few times (the endpoint may be just
    coming up); anything else is answered at once."""
    last_error = ""
    for delay in (*_RETRY_DELAYS_SECONDS, None):
        try:
            status, answer = opener(method, url, headers, body)
        except (OSError, ValueError) as error:
            last_error = type(error).__name__
        else:
            if status < 500 and status != 429 and b"ThrottlingException" not in answer[:200]:
                return status, answer
            last_error = f"HTTP {status}"
        if delay is None:
            break
        time.sleep(delay)
    raise TaskTokenError(f"{what} could not be reached ({last_error})")
