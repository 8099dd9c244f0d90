"""Encrypts user secrets with the stack's KMS key, bound to the user by encryption context."""

from __future__ import annotations

import base64
import json

from conversation_service.dal.aws import client


class SecretBox:
    def __init__(self, key_id: str) -> None:
        self._key_id = key_id

    def seal(self, secrets: dict[str, object], *, owner: str) -> str:
        response = client("kms").encrypt(
            KeyId=self._key_id,
            Plaintext=json.dumps(secrets).encode(),
            EncryptionContext={"owner": owner},
        )
        return base64.b64encode(response["CiphertextBlob"]).decode()

    def open(self, sealed: str, *, owner: str) -> dict[str, object]:
        response = client("kms").decrypt(
            CiphertextBlob=base64.b64decode(sealed),
            EncryptionContext={"owner": owner},
        )
        opened: dict[str, object] = json.loads(response["Plaintext"])
        return opened
