"""Encrypts user secrets with the stack's KMS key, bound to the user by encryption context.

KMS `Encrypt` takes at most 4096 bytes. Small payloads (an LLM key, a few tokens) are sealed
by KMS directly: one call. Larger ones (a big MCP configuration) use envelope encryption: a
data key from `GenerateDataKey` (same key, same encryption context) seals them with AES-GCM
locally, and only the wrapped data key is stored beside the ciphertext.
"""

from __future__ import annotations

import base64
import json
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conversation_service.dal.aws import client

KMS_DIRECT_LIMIT_BYTES = 4096
ENVELOPE_PREFIX = "env1:"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class SecretBox:
    def __init__(self, key_id: str) -> None:
        self._key_id = key_id

    def seal(self, secrets: dict[str, object], *, owner: str) -> str:
        plaintext = json.dumps(secrets).encode()
        if len(plaintext) <= KMS_DIRECT_LIMIT_BYTES:
            response = client("kms").encrypt(
                KeyId=self._key_id, Plaintext=plaintext, EncryptionContext={"owner": owner}
            )
            return _b64(response["CiphertextBlob"])
        data_key = client("kms").generate_data_key(
            KeyId=self._key_id, KeySpec="AES_256", EncryptionContext={"owner": owner}
        )
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key["Plaintext"]).encrypt(nonce, plaintext, owner.encode())
        envelope = {"key": _b64(data_key["CiphertextBlob"]), "nonce": _b64(nonce), "data": _b64(ciphertext)}
        return ENVELOPE_PREFIX + _b64(json.dumps(envelope).encode())

    def open(self, sealed: str, *, owner: str) -> dict[str, object]:
        if sealed.startswith(ENVELOPE_PREFIX):
            envelope = json.loads(base64.b64decode(sealed[len(ENVELOPE_PREFIX) :]))
            data_key = client("kms").decrypt(
                CiphertextBlob=base64.b64decode(envelope["key"]), EncryptionContext={"owner": owner}
            )["Plaintext"]
            plaintext = AESGCM(data_key).decrypt(
                base64.b64decode(envelope["nonce"]), base64.b64decode(envelope["data"]), owner.encode()
            )
        else:
            plaintext = client("kms").decrypt(
                CiphertextBlob=base64.b64decode(sealed), EncryptionContext={"owner": owner}
            )["Plaintext"]
        opened: dict[str, object] = json.loads(plaintext)
        return opened
