# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/plugins

.PHONY: demo airflow env holds test test-fast validate schema lint typecheck bench clean-demo

# The virtualenv is rebuilt whenever the pinned requirements change.
$(VENV)/.installed: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.0.1
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

demo: $(VENV)/.installed  ## seed the demo database once, run the catalogue's DAGs for today (DATE=past day)
	AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING $(PY) -m lifecycle.demo run $(if $(DATE),--date $(DATE))

airflow: $(VENV)/.installed  ## the Airflow UI on the demo: http://127.0.0.1:8080 (or a free port)
	$(PY) -m lifecycle.demo airflow

env: $(VENV)/.installed  ## eval "$$(make -s env)": the demo's environment (ports of a running make airflow)
	@$(PY) -m lifecycle.demo env

holds: $(VENV)/.installed  ## holds on the demo: make holds [ARGS='place --scope cdrs ...']
	eval "$$($(PY) -m lifecycle.demo env)" && $(PY) -m lifecycle holds $(or $(ARGS),list)

# The set-up check first: chromium, the `test` databases (created if missing), Redis.
test: $(VENV)/.installed  ## the whole test suite (PostgreSQL, MariaDB, Redis on 127.0.0.1; chromium)
	$(PY) -m lifecycle.demo check-test-setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Selects (never skips) the tests that need nothing beyond Python and SQLite files: the markers
# come from each test's fixtures and folder (tests/conftest.py). No set-up check: no server used.
FAST := not postgresql and not mariadb and not s3 and not airflow and not browser and not cluster
test-fast: $(VENV)/.installed  ## the unit and SQLite tests only, under a minute (no servers, no Airflow)
	$(PY) -m pytest -m "$(FAST)" $(PYTEST_ARGS)

# An invalid file: `python -m lifecycle validate` exits 1, so make fails (make's own exit code is 2).
validate: $(VENV)/.installed  ## check every policy file (for CI or a pre-commit hook)
	$(PY) -m lifecycle validate $(DIR)

schema: $(VENV)/.installed  ## regenerate the JSON Schema and the field reference from the model
	$(PY) -m lifecycle schema

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

# mypy, strict on the engine ([tool.mypy] in pyproject.toml); part of lint.
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

bench: $(VENV)/.installed  ## performance scripts (PostgreSQL on 127.0.0.1)
	$(PY) benchmarks/dag_parse.py
	$(PY) benchmarks/sql_purge.py
	$(PY) benchmarks/sql_purge.py --shuffled --kinds uuid --skip-extras
	$(PY) benchmarks/sql_partitions.py
	$(PY) benchmarks/s3_purge.py
	$(PY) benchmarks/ui_pages.py

clean-demo:
	rm -rf .demo
