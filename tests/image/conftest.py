"""The sandbox container image (`make sandbox-image`), run with buildah as on Fargate.

Every test here is skipped, with the reason, when the image of the current sources is not in
buildah's storage (or buildah cannot run: it needs root here). `make test` builds it first.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The control plane, git servers and hostile repository of tests/sandbox, and the sandbox package
# (its process helpers), as tests/sandbox/conftest.py puts them on the path.
for directory in (REPO_ROOT / "sandbox", REPO_ROOT / "tests" / "sandbox"):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))

from devstack import sandbox_image  # noqa: E402


def _why_not_runnable() -> str | None:
    if not sandbox_image.buildah_available():
        return "buildah is not installed (make sandbox-image installs it)"
    if os.geteuid() != 0:
        return "buildah's storage and chroot isolation need root"
    reference = sandbox_image.image_reference()
    if not sandbox_image.image_exists(reference):
        return f"the sandbox image of these sources ({reference}) is not built: make sandbox-image"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    reason = _why_not_runnable()
    if reason:
        pytest.skip(reason)
    return sandbox_image.image_reference()


@pytest.fixture
def container(image: str) -> Iterator[sandbox_image.SandboxContainer]:
    """A fresh working container of the image, removed afterwards."""
    made = sandbox_image.SandboxContainer.create(image, f"image-test-{secrets.token_hex(6)}")
    try:
        yield made
    finally:
        made.remove()
