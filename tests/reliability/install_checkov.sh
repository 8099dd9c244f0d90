#!/usr/bin/env bash
# checkov in a virtualenv of its own (default .venv-checkov): it pins boto3 and pytest versions
# that conflict with requirements/dev.txt. Idempotent: a stamp file marks a finished install.
set -euo pipefail
venv="${1:-.venv-checkov}"
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON313:-$(command -v python3.13 || echo python3)}"
if [ -f "$venv/.installed" ] && [ "$venv/.installed" -nt "$here/checkov-requirements.txt" ]; then
  exit 0
fi
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$here/checkov-requirements.txt"
touch "$venv/.installed"
