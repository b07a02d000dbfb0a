# numl: `make train` runs the default experiment, `make test` the test suite; both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; a CUDA node installs its own (see Dockerfile).
TORCH_SPEC ?= torch==2.13.0
EXPERIMENT ?= lensing_cnn
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-full lint docker docker-lint gpu-check clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[all]"
	touch $@

install: $(VENV)/.installed ## create .venv and install numl with every extra

train: install ## run the default experiment on CPU (EXPERIMENT=..., ARGS='key=value ...')
	$(PY) -m numl.train experiment=$(EXPERIMENT) trainer.accelerator=cpu $(ARGS)

test: install ## the test suite (fast: no slow, gpu or slurm tests)
	$(PY) -m pytest -m "not slow and not gpu and not slurm" $(ARGS)

test-full: install ## every CPU test, slow ones and the SLURM cluster tests included
	$(PY) -m pytest -m "not gpu" $(ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check numl tests hydra_plugins experiments

docker: ## build the CUDA image
	docker build -t numl:latest .

docker-lint: install ## hadolint on the Dockerfile
	$(VENV)/bin/hadolint Dockerfile

gpu-check: ## every GPU figure in one run of < 9 min on a CUDA machine (experiments/gpu/README.md; ARGS='--device cpu' dry run)
	bash experiments/gpu/run_all.sh $(ARGS)

clean: ## remove the virtual environment and caches (keeps logs/ and data/)
	rm -rf $(VENV) .pytest_cache .ruff_cache
