# Everything a fresh machine needs: `make serve` and `make test` (plus `make demo` for a one-off run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup serve demo test test-loaded lint bench clean

# Serving needs the runtime only; the tests add their tools (and a PostgreSQL server to test against).
$(VENV)/.runtime: pyproject.toml scripts/system-packages
	@echo "cellbox: setting up (needs Debian or Ubuntu with apt, as root): system packages, then Python packages in $(VENV)"
	./scripts/system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "cellbox: installing Cellbox and the data stack into $(VENV) (a few minutes the first time)"
	$(BIN)/pip install --progress-bar on -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	./scripts/system-packages --test
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

serve: $(VENV)/.runtime
	$(BIN)/cellbox serve

demo: $(VENV)/.runtime
	printf 'import pandas as pd, matplotlib.pyplot as plt\nx = pd.Series([1, 4, 9, 16])\nprint(x.describe())\nx.plot(title="squares")\n' \
		| $(BIN)/cellbox run -

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The suite on a busy machine: two CPU-bound loops run beside it the whole time (the result must be the same).
test-loaded: lint
	@sh -c 'sh -c "while :; do :; done" & a=$$!; sh -c "while :; do :; done" & b=$$!; \
		trap "kill $$a $$b" EXIT; $(BIN)/pytest'

bench: setup
	$(BIN)/python bench/all.py

clean:
	rm -rf $(VENV) build src/*.egg-info
