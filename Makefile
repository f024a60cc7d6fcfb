# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install peer, show devices pairing and syncing
#   make test   install the test dependencies and run the whole suite
# CI runs `make check`: lint (ruff, import-linter contracts), mypy --strict, then the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PEER_STAMP := $(VENV)/.peer-installed
TEST_STAMP := $(VENV)/.test-installed
PYTEST_ARGS ?=

.PHONY: demo test check install test-deps test-system-deps lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(PEER_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(PEER_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(PEER_STAMP)

test-deps: $(TEST_STAMP)

demo: install
	$(BIN)/python -m peer.dev.demo

# Two workers, one test file each at a time (a file's tests share fixtures such as
# the network namespaces of tests/peer/test_agent_lan.py): about 7 minutes instead of 11.
PYTEST_WORKERS ?= 2

# Debian packages some tests run for real (the relay tests: an OpenSSH server, two Syncthing
# instances; the clock-skew test: libfaketime). Installed when running as root (CI) and missing; elsewhere those tests skip and say why.
SYSTEM_TEST_PACKAGES := openssh-server:/usr/sbin/sshd syncthing:/usr/bin/syncthing faketime:/usr/bin/faketime

test-system-deps:
	@missing=""; for p in $(SYSTEM_TEST_PACKAGES); do \
	  [ -x "$${p#*:}" ] || missing="$$missing $${p%%:*}"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing"; \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 \
	         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1; }; } \
	  || echo "could not install$$missing (the tests that need them skip and say why)"; \
	elif [ -n "$$missing" ]; then echo "not installed:$$missing (the tests that need them skip and say why)"; fi

test: test-deps test-system-deps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: test-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

typecheck: test-deps
	$(BIN)/python -m mypy protocol peer tests

# What CI runs: every gate, cheapest first, then the suite.
check: lint typecheck test

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/protocol.py
	$(BIN)/python bench/store.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .hypothesis
