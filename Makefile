# perkflow — `make run` and `make test` are all a newcomer needs; `make` lists the rest.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per lock: `make run` installs only what running needs; tests, lint and types add the rest.
STAMP := $(VENV)/.installed-run-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat requirements.lock requirements-dev.lock pyproject.toml | sha1sum | cut -c1-12)
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
export PERKFLOW_HOME ?= $(CURDIR)/var

.PHONY: help setup setup-dev system-deps run serve test test-fast lint fmt types contracts bench lock i18n vendor clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(PIP) --no-deps -e .
	@rm -f $(VENV)/.installed-run-*; touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(PIP) -r requirements.lock -r requirements-dev.lock
	@rm -f $(VENV)/.installed-dev-*; touch $@

setup: $(STAMP) ## create .venv and install what running needs (requirements.lock)

setup-dev: $(DEV_STAMP) ## add the test, lint, type and Spark tools (requirements-dev.lock)

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

test: setup-dev system-deps lint types contracts ## everything CI runs: lint, types, contracts, the whole suite
	$(BIN)/pytest

test-fast: setup-dev ## the suite without PostgreSQL, browser and Spark tests (for a quick loop)
	$(BIN)/pytest -m "not postgres and not browser and not spark" -k "not postgresql"

lint: setup-dev ## ruff lint and format check
	$(BIN)/ruff check src tests bench migrations
	$(BIN)/ruff format --check src tests bench migrations

fmt: setup-dev ## format and autofix
	$(BIN)/ruff format src tests bench migrations
	$(BIN)/ruff check --fix src tests bench migrations

types: setup-dev ## mypy strict on src/
	$(BIN)/mypy

contracts: setup-dev ## import-linter: the dependency rules of docs/architecture.md
	$(BIN)/lint-imports

bench: setup-dev ## benchmarks; results go to bench/README.md by hand
	$(BIN)/python bench/synth.py --subscribers 1000000 --runs 3

lock: ## re-resolve both locks: requirements.lock (running), requirements-dev.lock (the rest, on top)
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install -q -e '.'
	{ echo "# What running perkflow needs: the closure of pyproject's \`dependencies\`, exact pins (\`make lock\`)."; \
	  .lockenv/bin/pip freeze --exclude-editable | grep -v '^perkflow' | sort -f; } > requirements.lock
	.lockenv/bin/pip install -q -e '.[dev,spark]'
	{ echo "# Installed on top of requirements.lock for tests, lint and types: the extras \`dev\` and \`spark\` (\`make lock\`)."; \
	  .lockenv/bin/pip freeze --exclude-editable | grep -v '^perkflow' | grep -vxFf requirements.lock | sort -f; } > requirements-dev.lock
	rm -rf .lockenv

# gettext's markers with their argument positions (1c = the context), as web/i18n.py defines them.
I18N_KEYWORDS = --no-default-keywords -k _ -k N_ -k l_ -k lp_:1c,2 -k gettext -k ngettext:1,2 \
	-k pgettext:1c,2 -k npgettext:1c,2,3

i18n: setup ## extract messages and merge them into the zh_CN catalog
	$(BIN)/pybabel extract -F babel.cfg $(I18N_KEYWORDS) --no-location --omit-header -o .messages.pot .
	$(BIN)/pybabel update -i .messages.pot -d src/perkflow/locale -l zh_CN \
		--no-fuzzy-matching
	@rm -f .messages.pot

vendor: setup ## fetch htmx, ECharts and jsQR (web/static/vendor/manifest.json) from the npm registry, hashes checked
	$(BIN)/python -m perkflow.web.vendor fetch

clean: ## remove the virtualenv and the default home (var/)
	rm -rf $(VENV) var
