# vmic: `make test` and `make demo` set themselves up in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# atrope (the EGI image-list consumer) for the interop tests, in its own venv outside the tree
ATROPE_VENV := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/vmic-test-atrope/venv
ATROPE_CONSTRAINTS := tests/interop/atrope/constraints.txt
ATROPE_STAMP := $(ATROPE_VENV)/.installed
# OpenStack Glance (served by gunicorn) for the cloud tests, likewise in its own venv
GLANCE_VENV := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/vmic-test-glance/venv
GLANCE_CONSTRAINTS := tests/interop/glance/constraints.txt
GLANCE_STAMP := $(GLANCE_VENV)/.installed

.PHONY: test demo lint typecheck pytest fuzz bench readme clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Rebuilt from scratch (venv --clear) only when the pinned versions change.
$(ATROPE_STAMP): $(ATROPE_CONSTRAINTS)
	$(PYTHON) -m venv --clear $(ATROPE_VENV)
	$(ATROPE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		--only-binary=:all: --constraint $(ATROPE_CONSTRAINTS) atrope==2.0.0
	touch $(ATROPE_STAMP)

# Wheels only, but simplegeneric (WSME needs it), published only as a source archive.
$(GLANCE_STAMP): $(GLANCE_CONSTRAINTS)
	$(PYTHON) -m venv --clear $(GLANCE_VENV)
	$(GLANCE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		--only-binary=:all: --no-binary=simplegeneric --constraint $(GLANCE_CONSTRAINTS) \
		glance==33.0.0 gunicorn
	touch $(GLANCE_STAMP)

test: $(STAMP) $(ATROPE_STAMP) $(GLANCE_STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict keys feeds site_agent federation tests bench

# Under make the interop tests fail, never skip, when a tool they need is missing.
pytest: $(STAMP) $(ATROPE_STAMP) $(GLANCE_STAMP)
	VMIC_ATROPE=$(ATROPE_VENV)/bin/atrope VMIC_GLANCE_VENV=$(GLANCE_VENV)/bin \
		VMIC_REQUIRE_INTEROP=1 $(BIN)/pytest -q

# Many more generated hostile inputs than `make test` runs (minutes, not seconds).
fuzz: $(STAMP)
	VMIC_HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -m fuzz -p no:cacheprovider

demo: $(STAMP)
	$(BIN)/python -m federation.demo

bench: $(STAMP)
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/verify_memory.py
	$(BIN)/python bench/mirror.py
	$(BIN)/python bench/delta.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/federation_tree.py
	$(BIN)/python bench/glance.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info

readme: $(STAMP)
	$(BIN)/python -m federation.cli.reference
