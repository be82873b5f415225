# aebench: `make setup` once, then `make bench`. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
AEBENCH := $(BIN)/aebench
MATRIX ?= quick
SET ?=
# pytest-benchmark gates for `make bench-micro`, e.g. BENCH_COMPARE_FAIL=mean:5%
BENCH_COMPARE_FAIL ?=
BENCH_SAVE ?= --benchmark-autosave

.PHONY: help setup setup-torch setup-jax test bench bench-paper bench-micro crosscheck report clean-reports gpu-wheels gpu-check
.PHONY: paper-figures

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(BIN)/python ## create .venv and install aebench with its dev extras (rerunnable)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'

setup-torch: $(BIN)/python ## add the CPU build of torch (CI does): `make test` then also checks the zoo on the torch backend
	$(BIN)/python -m pip install --quiet -e '.[torch]'  # the pin lives in pyproject.toml's torch extra

setup-jax: $(BIN)/python ## add the CPU build of JAX (CI does): `make test` then also checks the zoo on the jax backend
	$(BIN)/python -m pip install --quiet -e '.[jax]'

test: ## run the whole test suite (tiny data, a few minutes) and list its 15 slowest tests
	$(BIN)/python -m pytest -q --durations=15

.PHONY: test-fast golden readme
test-fast: ## the inner loop: every test but the slow end-to-end runs and the backend checks (under a minute)
	$(BIN)/python -m pytest -q -m "not slow and not backends"

golden: ## regenerate tests/golden/ on purpose (then review the diff before committing it)
	AEBENCH_UPDATE_GOLDEN=1 $(BIN)/python -m pytest -q tests -k golden

bench: ## run the quick matrix (bench/matrices/quick.toml) and write the report
	$(AEBENCH) run $(MATRIX) $(SET)

bench-paper: ## the paper's setting: conv AE, noise 0.2, full MNIST, 100 epochs (~15 min on 2 cores; RESUME=1 continues)
	$(AEBENCH) run paper $(if $(RESUME),--resume) $(SET)

# The README's pictures of the paper's run (the conv AE at noise 0.2), redrawn from the store (RUN=<id>; default:
# the latest run, which must be one that trained it: after `make bench` it is the quick profile's).
RUN ?=
paper-figures: ## write docs/paper-grid.png and docs/paper-curve.png from a paper run in the store
	$(AEBENCH) figure grid $(RUN) --variant conv --noise 0.2 --out docs/paper-grid.png
	$(AEBENCH) figure curve $(RUN) --variant conv --noise 0.2 --out docs/paper-curve.png

bench-micro: ## pytest-benchmark microbenchmarks (not part of `make test`)
	$(BIN)/python -m pytest -q benchmarks $(BENCH_SAVE) $(if $(BENCH_COMPARE_FAIL),--benchmark-compare --benchmark-compare-fail=$(BENCH_COMPARE_FAIL))

crosscheck: ## time the harness against hand-written tf.function loops and plain fit() on the conv AE
	$(AEBENCH) crosscheck $(SET)

report: ## rebuild the latest run's report from the store
	$(AEBENCH) report

readme: ## rewrite the README's metric and model-zoo tables from the registries
	$(BIN)/python -m aebench.docs README.md

clean-reports: ## delete generated reports and the result store
	find reports -mindepth 1 ! -name README.md -exec rm -rf {} +

# The borrowed-GPU check: prepare here (network), run there (JAX and torch, no TensorFlow, no network).
GPU_DATA ?= .gpu-data
GPU_OUT ?= reports/gpu-check

gpu-wheels: ## fetch keras/namex/optree wheels into .whl/ and copy mnist.npz to .gpu-data/ for gpu-check
	PYTHON=$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) bash bench/gpu_wheels.sh

gpu-check: ## on a GPU machine: the gpu matrix (JAX + torch; 255 s on an H200, install included) into GPU_OUT
	bash bench/gpu_check.sh $(GPU_DATA) $(GPU_OUT)
