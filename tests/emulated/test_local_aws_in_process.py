"""devstack.local_aws: the local stack's own boto3 calls are answered by moto in-process, the same
moto that serves everything outside the process over HTTP, one call at a time; a call for an AWS
endpoint moto does not answer never leaves the process. Run in a child process: LocalAws changes
process-wide botocore state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import json, urllib.request
    import boto3
    from botocore.awsrequest import AWSPreparedRequest
    from moto.core.models import botocore_stubber
    from devstack import local_aws

    aws = local_aws.LocalAws()
    aws.start()
    try:
        inside = boto3.client("dynamodb", region_name="us-east-1")
        inside.create_table(
            TableName="in-process",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        inside.put_item(TableName="in-process", Item={"pk": {"S": "a"}})
        url = inside.meta.endpoint_url
        outside = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=aws.endpoint_url)
        seen_over_http = outside.get_item(TableName="in-process", Key={"pk": {"S": "a"}}).get("Item")
        try:
            botocore_stubber.process_request(
                AWSPreparedRequest("POST", "https://no-such-service.us-east-1.api.aws/", {}, b"", False)
            )
            refused = False
        except local_aws.NoRealAws:
            refused = True
        print(json.dumps({"endpoint": url, "seen_over_http": seen_over_http, "refused": refused,
                          "lock_free": local_aws._MOTO_LOCK.acquire(blocking=False)}))
    finally:
        aws.stop()
    """
)


def test_the_stacks_own_calls_are_answered_in_process_by_the_moto_outsiders_reach_over_http() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["endpoint"].endswith(".amazonaws.com"), result  # not the loopback server
    assert result["seen_over_http"] == {"pk": {"S": "a"}}  # one moto behind both
    assert result["refused"] is True  # (moto answers unknown *.amazonaws.com URLs 404 itself)
    assert result["lock_free"] is True  # every call released the lock
