# perkflow — `make run` and `make test` are all a newcomer needs; `make` lists the rest.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
export PERKFLOW_HOME ?= $(CURDIR)/var

.PHONY: help setup system-deps run serve test test-fast lint fmt types contracts bench lock i18n clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP) ## create .venv and install the locked dependencies

system-deps: ## install Debian's postgresql, chromium and a Java runtime (Spark) when missing
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

run: setup ## migrate, generate a 200,000-subscriber operator on first run, serve the console
	$(BIN)/perkflow demo

serve: setup ## serve the console without setting anything up
	$(BIN)/perkflow serve

test: setup system-deps lint types contracts ## everything CI runs: lint, types, contracts, the whole suite
	$(BIN)/pytest

test-fast: setup ## the suite without PostgreSQL, browser and Spark tests (for a quick loop)
	$(BIN)/pytest -m "not postgres and not browser and not spark" -k "not postgresql"

lint: setup ## ruff lint and format check
	$(BIN)/ruff check src tests bench migrations
	$(BIN)/ruff format --check src tests bench migrations

fmt: setup ## format and autofix
	$(BIN)/ruff format src tests bench migrations
	$(BIN)/ruff check --fix src tests bench migrations

types: setup ## mypy strict on src/
	$(BIN)/mypy

contracts: setup ## import-linter: the dependency rules of docs/architecture.md
	$(BIN)/lint-imports

bench: setup ## benchmarks; results go to bench/README.md by hand
	$(BIN)/python bench/synth.py --subscribers 1000000 --runs 3

lock: ## re-resolve dependencies into requirements.lock (needs the package registry)
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install -q -e '.[dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^perkflow' > requirements.lock
	rm -rf .lockenv

i18n: setup ## extract messages and merge them into the zh_CN catalog
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k _ --no-location --omit-header -o .messages.pot .
	$(BIN)/pybabel update -i .messages.pot -d src/perkflow/locale -l zh_CN --no-location --omit-header
	@rm -f .messages.pot

clean: ## remove the virtualenv and the default home (var/)
	rm -rf $(VENV) var
