"""Print the template as CloudFormation deploys it: SAM's transform applied, offline.

Run by .venv-sam's Python (samtranslator lives there): `python sam_translate.py template.yaml`.
The roles SAM makes for functions and state machines, with every policy template expanded and
the managed policies SAM adds (basic execution, X-Ray, event sources), are then plain
AWS::IAM::Role resources that tests/reliability/test_least_privilege.py walks. The template's
`Fn::ForEach` loops are expanded first, as `AWS::LanguageExtensions` does before SAM's transform
(devstack/language_extensions.py: standard library only, so this Python imports it too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from devstack.language_extensions import expand  # after the repository is on the path

LOCAL_CODE_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri")


class NoManagedPolicyLookup:
    """Managed policies named in `Policies` resolve from SAM's bundled map, never from IAM."""

    def load(self) -> dict[str, str]:
        return {}


def translate(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        template = expand(yaml_parse(handle.read()))
    template["Transform"] = [name for name in template["Transform"] if name != "AWS::LanguageExtensions"]
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties") or {}
        for name in LOCAL_CODE_PROPERTIES:
            if isinstance(properties.get(name), str):  # a local path: what `sam build` would upload
                properties[name] = "s3://code-bucket/code.zip"
    translated: dict[str, Any] = transform(template, {}, NoManagedPolicyLookup())
    return translated


if __name__ == "__main__":
    json.dump(translate(sys.argv[1]), sys.stdout)
