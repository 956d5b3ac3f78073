# Everything a fresh machine needs: `make demo` (or `make serve` once the API lands) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml scripts/system-packages
	./scripts/system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	printf 'import pandas as pd, matplotlib.pyplot as plt\nx = pd.Series([1, 4, 9, 16])\nprint(x.describe())\nx.plot(title="squares")\n' \
		| $(BIN)/cellbox run -

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) build src/*.egg-info
