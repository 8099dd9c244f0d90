"""S3 bucket for what is too large for a DynamoDB item or a state-machine payload."""

from __future__ import annotations

import json
from typing import Any

from conversation_service.dal.aws import client


class ContextStore:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    def put_json(self, key: str, payload: dict[str, Any]) -> str:
        client("s3").put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(payload).encode(),
            ContentType="application/json",
            # No encryption header: the bucket's default applies (the stack's SecretsKey, with a
            # bucket key). `aws:kms` without a key id would pick the account's aws/s3 key instead.
        )
        return key

    def get_json(self, key: str) -> dict[str, Any]:
        body = client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read()
        loaded: dict[str, Any] = json.loads(body)
        return loaded

    def purge_prefix(self, prefix: str) -> int:
        """Delete everything under `prefix`: every version and delete marker (the bucket is versioned)."""
        s3 = client("s3")
        deleted = 0
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix):
            versions = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            objects = [{"Key": item["Key"], "VersionId": item["VersionId"]} for item in versions]
            for start in range(0, len(objects), 1000):
                chunk = objects[start : start + 1000]
                s3.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
                deleted += len(chunk)
        return deleted

    def delete_prefix(self, prefix: str) -> None:
        listing = client("s3").list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        objects = [{"Key": item["Key"]} for item in listing.get("Contents", [])]
        if objects:
            client("s3").delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
