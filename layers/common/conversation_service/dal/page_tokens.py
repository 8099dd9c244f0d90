"""Opaque page tokens: the listing's position, encrypted with KMS and bound to its user.

The encryption context names the owner and the purpose, so a token decrypts only for the user
it was issued to (another user's, a tampered or a made-up token fails to decrypt), and no other
ciphertext of the service (sealed settings) is accepted as a token.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from botocore.exceptions import ClientError

from conversation_service.dal.aws import client, error_code
from conversation_service.models.errors import PageTokenInvalid

PURPOSE = "conversation-list-page"
MAX_TOKEN_LENGTH = 4096
# What KMS answers for a blob it did not produce under this key and context. AccessDenied is
# what it answers when a crafted blob names a key we may not use (the key is pinned below, so
# a real permission problem shows on every other call of the service too).
_REFUSED = frozenset(
    {"InvalidCiphertextException", "IncorrectKeyException", "ValidationException", "AccessDeniedException"}
)


class PageTokenSealer:
    def __init__(self, key_id: str) -> None:
        self._key_id = key_id

    def seal(self, position: dict[str, Any], *, owner: str) -> str:
        response = client("kms").encrypt(
            KeyId=self._key_id,
            Plaintext=json.dumps(position, separators=(",", ":")).encode(),
            EncryptionContext={"owner": owner, "purpose": PURPOSE},
        )
        return base64.urlsafe_b64encode(response["CiphertextBlob"]).decode().rstrip("=")

    def open(self, token: str, *, owner: str) -> dict[str, Any]:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise PageTokenInvalid("length")
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as error:
            raise PageTokenInvalid("encoding") from error
        try:
            response = client("kms").decrypt(
                KeyId=self._key_id, CiphertextBlob=blob, EncryptionContext={"owner": owner, "purpose": PURPOSE}
            )
        except ClientError as error:
            if error_code(error) in _REFUSED:
                raise PageTokenInvalid(error_code(error)) from error
            raise
        try:
            position = json.loads(response["Plaintext"])
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PageTokenInvalid("content") from error
        if not isinstance(position, dict):
            raise PageTokenInvalid("content")
        return position
