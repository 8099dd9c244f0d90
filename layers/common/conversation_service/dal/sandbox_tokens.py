"""Seals a sandbox's bearer token for its task, so ECS and CloudTrail only ever see ciphertext.

RunTask's container overrides are readable by anyone with `ecs:DescribeTasks` and are recorded
in CloudTrail. The token goes there sealed by KMS under the sandbox token key, with the
encryption context `{"purpose": "sandbox-token", "conversation_id": <id>}`: only the sandbox task
role may Decrypt under that key (its key policy and the role's policy both require the
purpose), and KMS refuses any other context. The task opens it with its own credentials
(sandbox/openhands_sandbox/task_token.py). The service keeps only the token's SHA-256.

A warm pool sandbox's credential is sealed the same way, with
`{"purpose": "sandbox-token", "pool_sandbox_id": <id>}` (`SANDBOX_POOL_TOKEN_CIPHERTEXT`): neither
ciphertext opens under the other's context.
"""

from __future__ import annotations

import base64

from conversation_service.dal.aws import client

PURPOSE = "sandbox-token"
CIPHERTEXT_VARIABLE = "SANDBOX_TOKEN_CIPHERTEXT"
POOL_CIPHERTEXT_VARIABLE = "SANDBOX_POOL_TOKEN_CIPHERTEXT"


def sandbox_token_context(conversation_id: str) -> dict[str, str]:
    return {"purpose": PURPOSE, "conversation_id": conversation_id}


def pool_credential_context(sandbox_id: str) -> dict[str, str]:
    return {"purpose": PURPOSE, "pool_sandbox_id": sandbox_id}


class SandboxTokenSealer:
    def __init__(self, key_id: str) -> None:
        self._key_id = key_id

    def seal(self, token: str, *, conversation_id: str) -> str:
        """Base64 KMS ciphertext of `token`, openable only with this conversation's context."""
        return self._seal(token, sandbox_token_context(conversation_id))

    def seal_pool_credential(self, credential: str, *, sandbox_id: str) -> str:
        """Base64 KMS ciphertext of a pool sandbox's credential, openable only with its id."""
        return self._seal(credential, pool_credential_context(sandbox_id))

    def _seal(self, secret: str, context: dict[str, str]) -> str:
        response = client("kms").encrypt(KeyId=self._key_id, Plaintext=secret.encode(), EncryptionContext=context)
        return base64.b64encode(response["CiphertextBlob"]).decode()
