"""The ECS container credentials endpoint, for local sandbox tasks.

On Fargate, ECS serves each task its role's credentials at
`http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`. Locally a task gets
`AWS_CONTAINER_CREDENTIALS_FULL_URI` (this server on loopback) and
`AWS_CONTAINER_AUTHORIZATION_TOKEN` (a random value of its own), the form the AWS SDKs accept
for a loopback endpoint; the credentials are moto's test ones. Only a task's bootstrap gets
these variables (no child process inherits them), and an unknown or ended task's token gets 403,
so the sandbox's real code path (task_token.py) runs end to end under `make dev`.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CREDENTIALS_PATH = "/v2/credentials"


class TaskCredentialsServer:
    def __init__(self, credentials: dict[str, str], role_arn: str) -> None:
        self._credentials = credentials
        self._role_arn = role_arn
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.headers.get("Authorization", "")
                if self.path != CREDENTIALS_PATH or not server.knows(token):
                    self._answer(403, {"code": "AccessDenied", "message": "unknown task"})
                    return
                self._answer(200, server.document())

            def _answer(self, status: int, document: dict[str, str]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="task-credentials", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{CREDENTIALS_PATH}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def issue(self) -> str:
        """A new task's authorization token."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.discard(token)

    def knows(self, token: str) -> bool:
        with self._lock:
            return any(secrets.compare_digest(token, known) for known in self._tokens)

    def task_environment(self, token: str, kms_endpoint_url: str, region: str) -> dict[str, str]:
        """What the local task's bootstrap gets to open its sealed token (and nothing else does)."""
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.url,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
            "AWS_ENDPOINT_URL_KMS": kms_endpoint_url,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
        }

    def document(self) -> dict[str, str]:
        expiration = (datetime.now(UTC) + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "RoleArn": self._role_arn,
            "AccessKeyId": self._credentials["AWS_ACCESS_KEY_ID"],
            "SecretAccessKey": self._credentials["AWS_SECRET_ACCESS_KEY"],
            "Token": self._credentials["AWS_SESSION_TOKEN"],
            "Expiration": expiration,
        }


def open_sealed_sandbox_token(
    kms: Any, container_environment: list[dict[str, str]] | dict[str, str], conversation_id: str
) -> str:
    """What a task's bootstrap does with its role (KMS Decrypt of SANDBOX_TOKEN_CIPHERTEXT), for
    the test drivers and benchmarks that play the sandbox with boto3 against moto. The
    environment as RunTask's overrides list it, or as a map (a warm sandbox's assignment)."""
    variables = (
        container_environment
        if isinstance(container_environment, dict)
        else {item["name"]: item["value"] for item in container_environment}
    )
    ciphertext = variables["SANDBOX_TOKEN_CIPHERTEXT"]
    plaintext = kms.decrypt(
        CiphertextBlob=base64.b64decode(ciphertext),
        EncryptionContext={"purpose": "sandbox-token", "conversation_id": conversation_id},
    )["Plaintext"]
    return str(plaintext.decode())


def open_sealed_pool_credential(kms: Any, container_environment: list[dict[str, str]] | dict[str, str]) -> str:
    """What a pool task's bootstrap does with its role (KMS Decrypt of SANDBOX_POOL_TOKEN_CIPHERTEXT
    under its pool sandbox id), for the tests that play a pool sandbox with boto3 against moto."""
    variables = (
        container_environment
        if isinstance(container_environment, dict)
        else {item["name"]: item["value"] for item in container_environment}
    )
    sandbox_id = variables["SANDBOX_POOL_ID"]
    plaintext = kms.decrypt(
        CiphertextBlob=base64.b64decode(variables["SANDBOX_POOL_TOKEN_CIPHERTEXT"]),
        EncryptionContext={"purpose": "sandbox-token", "pool_sandbox_id": sandbox_id},
    )["Plaintext"]
    return str(plaintext.decode())


__all__ = ["CREDENTIALS_PATH", "TaskCredentialsServer", "open_sealed_pool_credential", "open_sealed_sandbox_token"]
