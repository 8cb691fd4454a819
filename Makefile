# The two commands a person needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A local wheel directory (CPU PyTorch) is used when the machine has one.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends
# The dashboard's and the docs page's front-end packages, pinned in api/web/package-lock.json.
WEB := api/web
WEB_STAMP := $(WEB)/vendor/.installed
NPM := $(shell command -v npm 2>/dev/null)

.PHONY: install demo test lint typecheck unit bench bench-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(FIND_LINKS) -e '.[dev,keras]'
	touch $(STAMP)

# npm ci installs exactly what the lock file pins (checked against its hashes); only the dist
# files the page loads are copied into vendor/ (gitignored), which the API serves.
$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(WEB)/vendor && mkdir -p $(WEB)/vendor
	cp $(WEB)/node_modules/uplot/dist/uPlot.iife.min.js $(WEB)/node_modules/uplot/dist/uPlot.min.css $(WEB)/vendor/
	cp $(WEB)/node_modules/swagger-ui-dist/swagger-ui-bundle.js $(WEB)/node_modules/swagger-ui-dist/swagger-ui.css $(WEB)/vendor/
	touch $@

# The execute stage's sandbox runs programs under bubblewrap, and the dashboard's test drives
# Chromium (Debian's packages): installed here when missing and we are root, otherwise we say
# how. The pages' packages need node and npm; without them /dashboard and /docs answer 503.
install: $(STAMP) $(if $(NPM),$(WEB_STAMP))
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    $(APT_INSTALL) bubblewrap || { apt-get update && $(APT_INSTALL) bubblewrap; }; \
	  else \
	    echo "bubblewrap is missing: run 'sudo apt-get install bubblewrap'" >&2; \
	  fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    $(APT_INSTALL) chromium || { apt-get update && $(APT_INSTALL) chromium; }; \
	  else \
	    echo "chromium is missing (the dashboard's test needs it): run 'sudo apt-get install chromium'" >&2; \
	  fi; }
	@[ -n "$(NPM)" ] || echo "npm is missing: /dashboard and /docs answer 503 until node and npm are installed and 'make install' runs again" >&2

demo: install
	$(BIN)/stagecast demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy streams schemas consumers projections api bench tests

test: install lint typecheck
	$(BIN)/pytest -q

# bench/peer.py's parts: Celery and the Redis client (the `bench` extra), and Debian's
# redis-server, installed when missing and we are root, otherwise we say how.
bench-deps: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(FIND_LINKS) -e '.[dev,keras,bench]'
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    $(APT_INSTALL) redis-server || { apt-get update && $(APT_INSTALL) redis-server; }; \
	  else \
	    echo "redis-server is missing: run 'sudo apt-get install redis-server'" >&2; exit 1; \
	  fi; }

bench: install
	$(BIN)/python bench/dsl.py
	$(BIN)/python bench/projector.py
	$(BIN)/python bench/e2e_latency.py
	$(BIN)/python bench/scaleout.py
	$(BIN)/python bench/execute.py
	$(BIN)/python bench/train.py

clean:
	rm -rf $(VENV) .stagecast .pytest_cache .mypy_cache .ruff_cache $(WEB)/node_modules $(WEB)/vendor test-artifacts
