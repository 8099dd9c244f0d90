"""For every suite: no real AWS credentials, ever, and the Powertools settings of the functions.

No AWS emulation here: tests/unit runs without moto; the suites that need it (tests/emulated,
tests/integration, ...) start their own (tests/README.md says which needs what).
"""

from __future__ import annotations

import os

# Before anything creates a boto3 client: no real credentials, ever.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "OpenHandsConversations",
        "POWERTOOLS_DEV": "false",
        # moto's EC2 backend would build its ~1,300 default AMIs in every new account (0.1-0.2 s of
        # CPU per provisioned stack); the sandbox network needs none.
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)
