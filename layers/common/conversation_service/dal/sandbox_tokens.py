"""Seals a sandbox's bearer token for its task, so ECS and CloudTrail only ever see ciphertext.

RunTask's container overrides are readable by anyone with `ecs:DescribeTasks` and are recorded
in CloudTrail. The token goes there sealed by KMS under the sandbox token key, with the
encryption context `{"purpose": "sandbox-token", "conversation_id": <id>}`: only the sandbox task
role may Decrypt under that key (its key policy and the role's policy both require the
purpose), and KMS refuses any other context. The task opens it with its own credentials
(sandbox/openhands_sandbox/task_token.py). The service keeps only the token's SHA-256.
"""

from __future__ import annotations

import base64

from conversation_service.dal.aws import client

PURPOSE = "sandbox-token"
CIPHERTEXT_VARIABLE = "SANDBOX_TOKEN_CIPHERTEXT"


def sandbox_token_context(conversation_id: str) -> dict[str, str]:
    return {"purpose": PURPOSE, "conversation_id": conversation_id}


class SandboxTokenSealer:
    def __init__(self, key_id: str) -> None:
        self._key_id = key_id

    def seal(self, token: str, *, conversation_id: str) -> str:
        """Base64 KMS ciphertext of `token`, openable only with this conversation's context."""
        response = client("kms").encrypt(
            KeyId=self._key_id, Plaintext=token.encode(), EncryptionContext=sandbox_token_context(conversation_id)
        )
        return base64.b64encode(response["CiphertextBlob"]).decode()
