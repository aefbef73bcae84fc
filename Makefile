# Two commands on a fresh clone: `make demo` (the whole workbook on the demo data) and `make test`.
# Each creates .venv and installs the package (editable, with its dev extra) when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Set here for every process the workbook starts (the package itself never writes os.environ): no
# albumentations update check; OpenMP threads that sleep instead of spinning while they wait (spinning threads
# starve a DataLoader worker or a second kernel on a small machine). HF_HUB_OFFLINE is left to the user:
# pretrained=True reads the Hugging Face cache first and asks the hub only when it answers within seconds.
export NO_ALBUMENTATIONS_UPDATE := 1
export OMP_WAIT_POLICY ?= PASSIVE
export PYTHONUNBUFFERED := 1
# A shell's PYTHONDONTWRITEBYTECODE=1 (this machine's has it) would make every process these targets start compile
# the workbook and the tests from source again: the suite starts about a hundred interpreters and kernels. The
# bytecode goes to .venv and the checkout's git-ignored __pycache__ folders.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help install test test-all demo lab board tensorboard dashboard bench mutation lint format clean

# `make help`: every target with its `## ` text (needs nothing installed; `make` alone still installs).
install: $(STAMP)  ## create .venv and install the package with its dev extra (the other targets do it when needed)

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

demo: $(STAMP)  ## the main job: demo data, then notebooks 01-08 for both tasks (notebooks/demo_params.yaml)
	$(BIN)/python -m fh_utils demo

# JupyterLab on the repository (outputs/ is browsable too), opened at notebooks/, the workbook's kernel preselected:
# JUPYTER_PATH puts its kernelspec before any other "python3"; IPC sockets instead of TCP ports for the kernels
# (no "running over TCP without encryption" warning); --allow-root only as root (containers). The server in
# tests/test_jupyterlab.py starts with the same flags (a test checks this recipe).
lab: $(STAMP)  ## JupyterLab at notebooks/ with the "Python 3 (fashion-how)" kernel
	JUPYTER_PATH=$(CURDIR)/$(VENV)/share/jupyter $(BIN)/jupyter lab --ServerApp.root_dir=. \
		--LabApp.default_url=/lab/tree/notebooks --MappingKernelManager.default_kernel_name=python3 \
		--KernelManager.transport=ipc $(if $(filter 0,$(shell id -u)),--allow-root)

# Watching runs (README "Watching runs"): TensorBoard over every run's tb/ folder, optuna-dashboard of one sweep's
# study (read-only); both on loopback ports. PORT=N for another port; STORAGE=URL for a sweep run with --storage.
board: $(STAMP)  ## TensorBoard on outputs/runs (every run's scalars) at http://127.0.0.1:6006/
	$(BIN)/python -m fh_utils board $(if $(PORT),--port $(PORT))

tensorboard: board  ## the same as make board

dashboard: $(STAMP)  ## optuna-dashboard of a sweep: make dashboard SWEEP=name (or STORAGE=postgresql://...)
	@test -n "$(SWEEP)$(STORAGE)" || { echo "usage: make dashboard SWEEP=<sweep name> [PORT=8080] (or STORAGE=URL)"; exit 2; }
	$(BIN)/python -m fh_utils dashboard $(or $(STORAGE),$(SWEEP)) $(if $(PORT),--port $(PORT))

bench: $(STAMP)  ## benchmarks (not part of make test); results go to benchmarks/RESULTS.md by hand
	$(BIN)/python -m benchmarks.run_all

# Mutation testing of the core (tools/mutation.py; mutmut 3 in staging copies under build/mutation/, each module
# checked against its fast tests; slow modules on a fixed sample): ~45 min on 2 idle cores; MODULE=path for one.
# Report: build/mutation/report.md. Not part of make test.
mutation: $(STAMP)  ## mutation score of the core modules (MODULE=path for one)
	$(BIN)/python tools/mutation.py $(if $(MODULE),--module $(MODULE)) $(MUTATION_ARGS)

lint: $(STAMP)  ## ruff over the code, and the notebooks committed without outputs (nbstripout --verify)
	$(BIN)/ruff check fh_utils tests benchmarks tools
	$(BIN)/python -m nbstripout --keep-id --verify notebooks/*.ipynb

format: $(STAMP)  ## ruff --fix, and strip the notebooks' outputs
	$(BIN)/ruff check --fix fh_utils tests benchmarks tools
	$(BIN)/python -m nbstripout --keep-id notebooks/*.ipynb

clean:  ## remove .venv and the pytest and ruff caches (outputs/ and data/ stay)
	rm -rf $(VENV) .pytest_cache .ruff_cache

help:  ## this list: every target with what it does
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z][a-zA-Z_-]*:[^=]*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
