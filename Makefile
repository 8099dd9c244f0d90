# The documented commands. `make dev` and `make test` install what they need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON313 ?= $(shell PYENV_VERSION=3.13.0 command -v python3.13 2>/dev/null || echo $$HOME/.pyenv/versions/3.13.0/bin/python3.13)
VENV := .venv
SAM_VENV := .venv-sam
AGENT_VENV := .venv-agent
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1
export PYENV_VERSION := 3.13.0

.PHONY: help install dev test test-fast lint format openapi openapi-check sam-validate sam-build clean bench sandbox-image .sandbox-image-for-tests

help:
	@echo "make dev    - run the whole service locally on http://127.0.0.1:3000/api"
	@echo "make test   - install, lint, check the template and OpenAPI, run every test"
	@echo "make lint   - ruff and mypy"
	@echo "make bench  - benchmarks (docs/performance.md)"
	@echo "make sandbox-image - build the sandbox container image with buildah (once; sandbox/README.md)"
	@echo "make dev DEVSTACK_ARGS=--sandbox-image - sandboxes run from that image"

$(VENV)/.installed: requirements/dev.txt layers/common/requirements.txt client/pyproject.toml
	test -x $(PY) || $(PYTHON313) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	$(PY) -m pip install -q -e ./client
	touch $@

# Debian packages the tests use: git (the sandbox clones with it), tmux (the CLI's live display is tested in a terminal).
.system-packages:
	@command -v git >/dev/null && command -v tmux >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git tmux)
	touch $@

$(SAM_VENV)/.installed: requirements/sam.txt
	test -x $(SAM_VENV)/bin/python || $(PYTHON313) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --upgrade pip
	$(SAM_VENV)/bin/python -m pip install -q -r requirements/sam.txt
	touch $@

# The sandbox runtime: the real openhands-agent-server, as the container image installs it.
$(AGENT_VENV)/.installed: sandbox/requirements.txt sandbox/constraints.txt
	test -x $(AGENT_VENV)/bin/python || $(PYTHON313) -m venv $(AGENT_VENV)
	$(AGENT_VENV)/bin/python -m pip install -q --upgrade pip
	$(AGENT_VENV)/bin/python -m pip install -q -r sandbox/requirements.txt -c sandbox/constraints.txt
	touch $@

# checkov pins boto3/pytest of its own: it gets a virtualenv of its own too.
.venv-checkov/.installed: tests/reliability/checkov-requirements.txt tests/reliability/install_checkov.sh
	PYTHON313=$(PYTHON313) bash tests/reliability/install_checkov.sh .venv-checkov

install: .system-packages $(VENV)/.installed $(SAM_VENV)/.installed $(AGENT_VENV)/.installed .venv-checkov/.installed

dev: $(VENV)/.installed $(AGENT_VENV)/.installed
	$(PY) -m devstack $(DEVSTACK_ARGS)

# The sandbox image from sandbox/Dockerfile, with buildah (installed from Debian's packages if
# missing) on a debootstrap base. Done once: the image is tagged with a hash of its inputs and the
# build is skipped while that tag is in buildah's storage (the base is cached on its own).
sandbox-image: $(VENV)/.installed
	$(PY) -m devstack.sandbox_image build

# make test: the image tests run against the current sources (built first; skipped without root).
.sandbox-image-for-tests: $(VENV)/.installed
	$(PY) -m devstack.sandbox_image build --unless-impossible

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy layers/common/conversation_service functions devstack sandbox/openhands_sandbox scripts
	MYPYPATH=client/src $(VENV)/bin/mypy -p openhands_conversations_client

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

openapi: $(VENV)/.installed
	$(PY) scripts/openapi.py

openapi-check: $(VENV)/.installed
	$(PY) scripts/openapi.py --check

sam-validate: $(SAM_VENV)/.installed
	$(SAM) validate --lint
	$(SAM) validate --region $(AWS_DEFAULT_REGION)

sam-build: $(SAM_VENV)/.installed
	PATH="$(abspath $(SAM_VENV))/bin:$$PATH" $(SAM) build --parallel

# Each suite runs in its own pytest process: they start moto in different ways (in-process
# mocks, moto servers, the whole local stack), and a process per suite keeps one suite's
# process-wide state (patched moto backends, cached clients) from reaching the next.
# scripts/test_suites.py runs TEST_JOBS of them at once (one pytest keeps about one core busy),
# longest first, never two of TEST_ONE_AT_A_TIME together (they boot agent-servers: 13 s of CPU
# each, and the timeouts a second boot would squeeze); each suite's output is printed whole when
# it ends, a summary names each suite with its seconds, and exit 5 (no tests) is said, not failed.
# The checks before them run TEST_JOBS at a time too, each target's output kept together.
TEST_SUITES := $(filter-out __pycache__ support,$(notdir $(patsubst %/,%,$(wildcard tests/*/))))
TEST_JOBS ?= 2
TEST_ONE_AT_A_TIME := e2e sandbox channel image client
TEST_ORDER := reliability lifecycle e2e client sandbox pool emulated integration channel image unit
TEST_RUN_ORDER := $(filter $(TEST_SUITES),$(TEST_ORDER)) $(filter-out $(TEST_ORDER),$(TEST_SUITES))

test: install .sandbox-image-for-tests
	@$(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target lint openapi-check sam-validate sam-build
	@$(PY) scripts/test_suites.py --jobs $(TEST_JOBS) --one-at-a-time "$(TEST_ONE_AT_A_TIME)" $(TEST_RUN_ORDER)

test-fast: $(VENV)/.installed
	$(VENV)/bin/pytest -q tests -m "not e2e and not agent_server"

bench: install
	$(PY) -m benchmarks

clean:
	rm -rf .aws-sam .devstack .test-logs .pytest_cache .mypy_cache .ruff_cache
