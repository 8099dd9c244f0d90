"""Fixtures of the client's tests: the fake API on loopback, a client for it, `convo` run in-process."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CLIENT_SOURCE = Path(__file__).resolve().parents[2] / "client" / "src"
# The tests exercise the source tree (the same code `pip install -e ./client` installs).
if str(CLIENT_SOURCE) not in sys.path:
    sys.path.insert(0, str(CLIENT_SOURCE))

from openhands_conversations_client import ConversationsClient  # noqa: E402  (after the path above)
from openhands_conversations_client.cli import main  # noqa: E402

from tests.client.fake_api import FakeConversationsApi  # noqa: E402


@pytest.fixture
def fake_api() -> Iterator[FakeConversationsApi]:
    with FakeConversationsApi().running() as api:
        yield api


@pytest.fixture
def api(fake_api: FakeConversationsApi) -> Iterator[ConversationsClient]:
    with ConversationsClient(fake_api.url, timeout=5) as client:
        yield client


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


RunConvo = Callable[..., CliResult]


@pytest.fixture
def convo(
    fake_api: FakeConversationsApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> RunConvo:
    """`convo ARGS...` in this process against the fake API (CONVO_ENDPOINT), stdout not a terminal."""
    monkeypatch.setenv("CONVO_ENDPOINT", fake_api.url)
    monkeypatch.delenv("CONVO_API_KEY", raising=False)

    def run(*argv: str, stdin: str = "") -> CliResult:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def installed_convo() -> Path:
    """The `convo` console script of the interpreter running the tests (`pip install -e ./client`)."""
    script = Path(sys.executable).parent / "convo"
    if not script.exists():
        pytest.fail(f"{script} is missing: install the client with `{sys.executable} -m pip install -e ./client`")
    return script
