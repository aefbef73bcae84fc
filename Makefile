# Two commands on a fresh clone: `make demo` (the whole workbook on the demo data) and `make test`.
# Each creates .venv and installs the package (editable, with its dev extra) when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install test test-all demo lab bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fashion-how)" >/dev/null
	@touch $(STAMP)

test: $(STAMP)  ## fast suite: every module and every notebook with small parameters
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP)  ## everything, slow tests included
	$(BIN)/python -m pytest -q

demo: $(STAMP)  ## the main job: demo data, then notebooks 01-05 for both tasks
	$(BIN)/python -m fh_utils demo

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)  ## benchmarks (not part of make test); results go to benchmarks/RESULTS.md by hand
	$(BIN)/python -m benchmarks.run_all

lint: $(STAMP)
	$(BIN)/ruff check fh_utils tests benchmarks
	$(BIN)/python -m nbstripout --keep-id --verify notebooks/*.ipynb

format: $(STAMP)
	$(BIN)/ruff check --fix fh_utils tests benchmarks
	$(BIN)/python -m nbstripout --keep-id notebooks/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
