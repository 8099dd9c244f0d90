"""Writes (or checks) docs/openapi.json, the OpenAPI document generated from the API code.

python scripts/openapi.py          # regenerate
python scripts/openapi.py --check  # fail if the committed document is stale
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "openapi.json"


def generate() -> str:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    sys.path[:0] = [str(ROOT / "layers" / "common"), str(ROOT / "functions")]
    from conversation_service.models.environment import ApiEnvironment

    # The document needs the routes, not AWS: placeholders satisfy the function's required variables.
    for name in ApiEnvironment.model_fields:
        os.environ.setdefault(name, f"openapi-{name.lower()}")
    from api.app import openapi_schema

    return json.dumps(openapi_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when docs/openapi.json is stale")
    arguments = parser.parse_args()
    document = generate()
    if arguments.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != document:
            print("docs/openapi.json is stale: run `make openapi` and commit it", file=sys.stderr)
            return 1
        print("docs/openapi.json is up to date")
        return 0
    DOCUMENT.write_text(document)
    print(f"wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
