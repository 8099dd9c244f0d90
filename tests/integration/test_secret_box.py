"""Secrets of any size seal and open; the owner binds them (another owner cannot open them)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from conversation_service.dal import aws
from conversation_service.dal.secrets import ENVELOPE_PREFIX, KMS_DIRECT_LIMIT_BYTES, SecretBox
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
