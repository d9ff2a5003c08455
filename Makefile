# kwsearch developer and user entry points. `make setup` once, then `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Which torch to install when the environment has none. Empty: choose automatically
# (the CPU wheel torch==2.13.0 on a machine without an NVIDIA GPU, the registry's default
# CUDA build where `nvidia-smi` works). Set it to force a build, e.g. TORCH="torch==2.5.1".
TORCH  ?=

.PHONY: setup test lint format clean quickstart

setup: $(BIN)/kwsearch
	@# the browser runs the report tests; PostgreSQL the storage test
	@bash scripts/install_system_packages.sh chromium chromium-driver postgresql

# The venv is rebuilt only when the package metadata changes.
$(BIN)/kwsearch: pyproject.toml
	@bash scripts/create_venv.sh "$(PYTHON)" "$(VENV)" "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev,track]'
	@touch $@

# A KernelWarehouse search on Fashion-MNIST, on the CPU, in a few minutes; ends with the front
# and the report (reports/quickstart.html).
quickstart: setup
	$(BIN)/kwsearch search studies/quickstart.yaml
	$(BIN)/kwsearch report studies/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

lint: $(BIN)/kwsearch
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/kwsearch
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
