# Two commands: `make demo` and `make test`. Each creates/refreshes .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean tooling fuzz

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ltfu demo

tooling:
	bash scripts/setup-cht-tooling.sh
	bash scripts/setup-openhim-tooling.sh
	bash scripts/fetch-fhir-schema.sh
	bash scripts/setup-browser-tooling.sh

test: $(STAMP) tooling
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# No-5xx property tests at depth: 5,000 examples in each of the 4 tests = 20,000 generated requests.
fuzz: $(STAMP)
	LTFU_FUZZ_EXAMPLES=5000 $(BIN)/python -m pytest tests/api/test_fuzz_no_5xx.py -q --timeout=0 --hypothesis-show-statistics

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) ltfu-data .pytest_cache
