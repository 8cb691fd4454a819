# The two commands a person needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A local wheel directory (CPU PyTorch) is used when the machine has one.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends

.PHONY: install demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(FIND_LINKS) -e '.[dev,keras]'
	touch $(STAMP)

# The execute stage's sandbox runs programs under bubblewrap (Debian's package): installed
# here when missing and we are root, otherwise we say how.
install: $(STAMP)
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    $(APT_INSTALL) bubblewrap || { apt-get update && $(APT_INSTALL) bubblewrap; }; \
	  else \
	    echo "bubblewrap is missing: run 'sudo apt-get install bubblewrap'" >&2; \
	  fi; }

demo: install
	$(BIN)/stagecast demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy streams schemas consumers projections api bench tests

test: install lint typecheck
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/dsl.py
	$(BIN)/python bench/projector.py
	$(BIN)/python bench/e2e_latency.py
	$(BIN)/python bench/execute.py
	$(BIN)/python bench/train.py

clean:
	rm -rf $(VENV) .stagecast .pytest_cache .mypy_cache .ruff_cache
