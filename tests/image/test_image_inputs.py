"""What decides whether the image is rebuilt, and how a task's environment reaches a container
(no buildah needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devstack import sandbox_image


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    copy = tmp_path / "sandbox"
    shutil.copytree(sandbox_image.SANDBOX_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_the_tag_follows_the_inputs_and_nothing_else(sources: Path) -> None:
    base = "localhost/openhands-sandbox-base:trixie-test"
    first = sandbox_image.image_reference(base, sources)
    assert first == sandbox_image.image_reference(base, sources)
    assert first.startswith(f"{sandbox_image.IMAGE_REPOSITORY}:")

    # Bytecode and files outside the build inputs do not change it.
    (sources / "openhands_sandbox" / "__pycache__").mkdir()
    (sources / "openhands_sandbox" / "__pycache__" / "bootstrap.cpython-313.pyc").write_bytes(b"\0")
    (sources / "README.md").write_text("edited\n")
    assert sandbox_image.image_reference(base, sources) == first

    # Each input, and the base, does.
    seen = {first, sandbox_image.image_reference(base + "-other", sources)}
    for name in ("Dockerfile", "requirements.txt", "constraints.txt", "openhands_sandbox/bootstrap.py"):
        path = sources / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        seen.add(sandbox_image.image_reference(base, sources))
        path.write_bytes(original)
    (sources / "openhands_sandbox" / "new_module.py").write_text("VALUE = 1\n")
    seen.add(sandbox_image.image_reference(base, sources))
    assert len(seen) == 7


def test_the_environment_file_gives_the_shell_each_value_exactly(tmp_path: Path) -> None:
    environment = {
        "SANDBOX_TOKEN": "tok_'quoted' \"double\" $HOME `id` \\ back",
        "MULTILINE": "line one\nline two",
        "EMPTY": "",
        "CONVERSATION_ID": "0" * 32,
    }
    path = tmp_path / sandbox_image.ENVIRONMENT_FILE
    path.write_text(sandbox_image.environment_file_text(environment))
    script = f"set -a && . {path} && set +a && env -0"
    result = subprocess.run(["/bin/sh", "-c", script], env={}, capture_output=True, check=True, timeout=10)
    seen = dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    for name, value in environment.items():
        assert seen[name] == value


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", ""])
def test_a_variable_a_shell_cannot_set_is_refused(name: str) -> None:
    with pytest.raises(sandbox_image.ImageError):
        sandbox_image.environment_file_text({name: "x"})
