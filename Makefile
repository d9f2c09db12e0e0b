# Two commands do all set-up from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test build lint format bench clean

# The tests of the modules setup.py compiles, run a second time as plain Python (a gateway without a compiler).
PURE_TESTS := tests/fieldline tests/edge_agent/test_compiled.py tests/edge_agent/test_cleaning.py \
	tests/edge_agent/test_quality.py tests/edge_agent/test_window.py tests/edge_agent/test_downsample.py \
	tests/edge_agent/test_deadband.py tests/edge_agent/test_swinging_door.py tests/edge_agent/test_ingest.py \
	tests/edge_agent/test_mqtt_subscriber.py tests/edge_agent/test_config.py

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The edge agent's per-message modules compiled with Cython (setup.py); only changed sources are rebuilt.
build: $(STAMP)
	$(BIN)/python setup.py --quiet build_ext --inplace --parallel 2

demo: build
	$(BIN)/fieldline demo

test: build
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)
	FIELDLINE_PURE_PYTHON=1 $(BIN)/python -m pytest -q -ra $(PURE_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: build
	$(BIN)/python bench/edge_throughput.py

clean:
	rm -rf $(VENV) .fieldline .pytest_cache build
	find fieldline edge_agent -name '*.so' -delete
