# vmic: `make test` and `make demo` set themselves up in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck pytest fuzz bench readme clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict keys feeds site_agent federation tests bench

pytest: $(STAMP)
	$(BIN)/pytest -q

# Many more generated hostile inputs than `make test` runs (minutes, not seconds).
fuzz: $(STAMP)
	VMIC_HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -m fuzz -p no:cacheprovider

demo: $(STAMP)
	$(BIN)/python -m federation.demo

bench: $(STAMP)
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/verify_memory.py
	$(BIN)/python bench/mirror.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/federation_tree.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info

readme: $(STAMP)
	$(BIN)/python -m federation.cli.reference
