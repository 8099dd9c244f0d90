"""tests/unit stays what its name says: no AWS emulation. Every module of the suite (and the
conftests pytest loads with it) imports without moto, so nothing in it can start moto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = Path(__file__).resolve().parent


def test_the_unit_suite_imports_no_moto() -> None:
    modules = ["tests.conftest", "tests.unit.conftest"] + [
        f"tests.unit.{path.stem}" for path in sorted(UNIT.glob("test_*.py"))
    ]
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(name for name in sys.modules if name == 'moto' or name.startswith('moto.'))\n"
        "print(len(sys.modules)); assert not loaded, loaded\n"
    )
    paths = [str(ROOT / "layers" / "common"), str(ROOT / "functions"), str(ROOT)]
    env = {"PYTHONPATH": ":".join(paths), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) > 100  # it did import the suite
