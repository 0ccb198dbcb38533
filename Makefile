# securex — the two commands are `make run` and `make test`; everything else follows from them.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export SECUREX_INSTANCE ?= $(CURDIR)/var

.PHONY: install run test lint system-deps lock clean

# Idempotent: rebuilt only when the lock or the project metadata change.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

run: install
	@test -f "$(SECUREX_INSTANCE)/keys/instance.key" || $(BIN)/securex init --demo
	@$(BIN)/securex db upgrade
	@echo "securex : http://127.0.0.1:$(PORT)/"
	@test ! -f "$(SECUREX_INSTANCE)/demo-credentials.json" || \
		echo "Identifiants de démonstration : $(SECUREX_INSTANCE)/demo-credentials.json (code TOTP : .venv/bin/securex totp EMAIL)"
	$(BIN)/securex serve --host 127.0.0.1 --port $(PORT)

# Debian packages the tests start for real (see scripts/system-deps.sh).
system-deps:
	@sh scripts/system-deps.sh

LINT_PATHS := securex tests migrations $(wildcard bench)

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

# axe-core, from npm, for the accessibility checks of the browser journeys.
AXE := tests/browser/node_modules/axe-core/axe.min.js
$(AXE): tests/browser/package.json tests/browser/package-lock.json | system-deps
	npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
	touch $@

test: install system-deps lint $(AXE)
	bash scripts/test-both.sh $(BIN)/pytest

# Re-pin every dependency after editing pyproject.toml.
lock: install
	$(BIN)/pip-compile -q --allow-unsafe --extra dev --generate-hashes --strip-extras -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache tests/browser/node_modules
