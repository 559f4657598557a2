# Two entry points (see README): `make run` and `make test`. Both create .venv on first use.
# TORCH selects the torch build installed before everything else; override it for your CUDA
# version, e.g. `make run TORCH="torch --index-url https://download.pytorch.org/whl/cu126"`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
CORES ?= all
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: setup run test lint clean-results

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

# The tests also exercise the MMLU integration and the SLURM profile, so they install those extras too.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,mmlu,slurm]"
	touch $(TEST_STAMP)

setup: $(STAMP)

# Notebook rules call jupyter from PATH, hence the venv's bin/ first.
run: $(STAMP)
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES) $(ARGS)

test: $(TEST_STAMP)
	PATH="$(BIN):$$PATH" python -m pytest $(ARGS)

lint: $(STAMP)
	PATH="$(BIN):$$PATH" snakemake --lint

clean-results:
	rm -rf results/*/ .snakemake/
