"""The local stack: AWS resources from template.yaml on moto, the real handlers, a local Fargate."""

import sys
from pathlib import Path

# The sandbox's own package (stdlib only), for the names and helpers both sides share.
SANDBOX_PACKAGE_DIR = Path(__file__).resolve().parents[1] / "sandbox"
if str(SANDBOX_PACKAGE_DIR) not in sys.path:
    sys.path.append(str(SANDBOX_PACKAGE_DIR))
