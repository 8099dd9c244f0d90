"""Encrypts user secrets with the stack's KMS key, bound to the user by encryption context.

KMS `Encrypt` takes at most 4096 bytes. Small payloads (an LLM key, a few tokens) are sealed
by KMS directly: one call. Larger ones (a big MCP configuration) use envelope encryption: a
data key from `GenerateDataKey` (same key, same encryption context) seals them with AES-GCM
locally, and only the wrapped data key is stored beside the ciphertext.

The encryption context always names the owner (`{"owner": <user id>}`); what belongs to one
conversation (its MCP servers, its agent-server session key) also names the conversation
(`{"owner": ..., "conversation_id": ...}`) and is marked `conv1:`. So a sealed value copied to
another user's or another conversation's item does not open there, and the mark cannot be
stripped to open it with the owner alone (KMS and AES-GCM check the whole context). Values
sealed before the conversation was named (no mark) still open with the owner's context.
"""

from __future__ import annotations

import base64
import json
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conversation_service.dal.aws import client
from conversation_service.models.errors import SealedForAConversation

KMS_DIRECT_LIMIT_BYTES = 4096
ENVELOPE_PREFIX = "env1:"
CONVERSATION_PREFIX = "conv1:"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encryption_context(owner: str, conversation_id: str | None = None) -> dict[str, str]:
    context = {"owner": owner}
    if conversation_id is not None:
        context["conversation_id"] = conversation_id
    return context


class SecretBox:
    def __init__(self, key_id: str) -> None:
        self._key_id = key_id

    def seal(self, secrets: dict[str, object], *, owner: str, conversation_id: str | None = None) -> str:
        context = encryption_context(owner, conversation_id)
        mark = CONVERSATION_PREFIX if conversation_id is not None else ""
        plaintext = json.dumps(secrets).encode()
        if len(plaintext) <= KMS_DIRECT_LIMIT_BYTES:
            response = client("kms").encrypt(KeyId=self._key_id, Plaintext=plaintext, EncryptionContext=context)
            return mark + _b64(response["CiphertextBlob"])
        data_key = client("kms").generate_data_key(KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=context)
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key["Plaintext"]).encrypt(nonce, plaintext, _aad(context))
        envelope = {"key": _b64(data_key["CiphertextBlob"]), "nonce": _b64(nonce), "data": _b64(ciphertext)}
        return mark + ENVELOPE_PREFIX + _b64(json.dumps(envelope).encode())

    def open(self, sealed: str, *, owner: str, conversation_id: str | None = None) -> dict[str, object]:
        if sealed.startswith(CONVERSATION_PREFIX):
            if conversation_id is None:
                raise SealedForAConversation("this value is sealed for a conversation: name it")
            context = encryption_context(owner, conversation_id)
            sealed = sealed[len(CONVERSATION_PREFIX) :]
        else:
            context = encryption_context(owner)  # sealed for the owner alone (or before conversations were named)
        if sealed.startswith(ENVELOPE_PREFIX):
            envelope = json.loads(base64.b64decode(sealed[len(ENVELOPE_PREFIX) :]))
            data_key = client("kms").decrypt(
                CiphertextBlob=base64.b64decode(envelope["key"]), EncryptionContext=context
            )["Plaintext"]
            plaintext = AESGCM(data_key).decrypt(
                base64.b64decode(envelope["nonce"]), base64.b64decode(envelope["data"]), _aad(context)
            )
        else:
            plaintext = client("kms").decrypt(CiphertextBlob=base64.b64decode(sealed), EncryptionContext=context)[
                "Plaintext"
            ]
        opened: dict[str, object] = json.loads(plaintext)
        return opened


def _aad(context: dict[str, str]) -> bytes:
    """AES-GCM's associated data: the owner alone as before, else the whole context."""
    if set(context) == {"owner"}:
        return context["owner"].encode()
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()
