# Two entry points for a fresh clone: `make demo` and `make test`.
# Both create .venv when missing and install the pinned CPU torch wheel before anything else,
# because a bare `torch` requirement would otherwise pull several GB of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# deepbet (learned brain mask) without its GUI dependency customtkinter: see pyproject.toml.
DEEPBET_VERSION ?= 1.0.2
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

export NIPYPE_NO_ET := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install lint test test-fast demo benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps "deepbet==$(DEEPBET_VERSION)"
	touch $@

install: $(VENV)/.installed

# ruff's lint rules and formatter (configured in pyproject.toml); `ruff check --fix .` and
# `ruff format .` make most of what this reports go away.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: install lint
	$(PY) -m pytest -n 2 --dist loadfile --durations=15 $(PYTEST_ARGS)

test-fast: install lint
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

demo: install
	$(PY) -m bids_harmonize.demo $(DEMO_DIR)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
