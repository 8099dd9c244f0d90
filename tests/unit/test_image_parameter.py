"""The image a conversation records and the one the sandbox task definition runs are one template
parameter (the API's answers: tests/emulated/test_defaults_and_settings.py)."""

from __future__ import annotations

from devstack.template_resources import load_template


def test_the_recorded_image_and_the_task_definitions_are_one_parameter() -> None:
    template = load_template()
    recorded = template["Globals"]["Function"]["Environment"]["Variables"]["DEFAULT_SANDBOX_IMAGE"]
    containers = template["Resources"]["SandboxTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert [container["Image"] for container in containers] == [recorded]
