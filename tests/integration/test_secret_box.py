"""Secrets of any size seal and open; the owner binds them (another owner cannot open them)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from conversation_service.dal import aws
from conversation_service.dal.secrets import (
    CONVERSATION_PREFIX,
    ENVELOPE_PREFIX,
    KMS_DIRECT_LIMIT_BYTES,
    SecretBox,
)
from conversation_service.models.errors import SealedForAConversation
from cryptography.exceptions import InvalidTag
from moto import mock_aws


@pytest.mark.parametrize("size", [10, KMS_DIRECT_LIMIT_BYTES - 20, KMS_DIRECT_LIMIT_BYTES + 1, 200_000])
def test_secrets_of_any_size_round_trip_and_stay_bound_to_their_owner(size: int) -> None:
    with mock_aws():
        aws.client.cache_clear()
        key = aws.client("kms").create_key()["KeyMetadata"]["KeyId"]
        box = SecretBox(key)
        payload = {"value": "s" * size}
        sealed = box.seal(payload, owner="user-1")
        assert sealed.startswith(ENVELOPE_PREFIX) == (size > KMS_DIRECT_LIMIT_BYTES - 15)
        assert "sss" not in sealed
        assert box.open(sealed, owner="user-1") == payload
        with pytest.raises((ClientError, InvalidTag)):
            box.open(sealed, owner="user-2")
    aws.client.cache_clear()


def test_a_conversations_secret_opens_only_for_that_conversation_and_the_old_format_still_opens() -> None:
    with mock_aws():
        aws.client.cache_clear()
        key = aws.client("kms").create_key()["KeyMetadata"]["KeyId"]
        box = SecretBox(key)
        for size in (10, KMS_DIRECT_LIMIT_BYTES + 1):
            payload = {"value": "k" * size}
            sealed = box.seal(payload, owner="user-1", conversation_id="a" * 32)
            assert sealed.startswith(CONVERSATION_PREFIX)
            assert box.open(sealed, owner="user-1", conversation_id="a" * 32) == payload
            with pytest.raises((ClientError, InvalidTag)):
                box.open(sealed, owner="user-1", conversation_id="b" * 32)
            with pytest.raises((ClientError, InvalidTag)):
                box.open(sealed, owner="user-2", conversation_id="a" * 32)
            with pytest.raises(SealedForAConversation):
                box.open(sealed, owner="user-1")
            # The mark cannot be stripped to open it with the owner alone.
            with pytest.raises((ClientError, InvalidTag)):
                box.open(sealed[len(CONVERSATION_PREFIX) :], owner="user-1")
            # A value sealed before conversations were named keeps opening, wherever it is read.
            legacy = box.seal(payload, owner="user-1")
            assert box.open(legacy, owner="user-1", conversation_id="a" * 32) == payload
    aws.client.cache_clear()
