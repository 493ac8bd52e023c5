# sparsedepth: `make reproduce` regenerates the paper's figures and tables; `make test` runs the test suite.
# Both build the virtual environment first, so each works as the first command on a fresh clone.
PROFILE ?= cpu
FORCE ?=
JOBS ?= auto
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

# Offline by default, every cache inside the checkout.
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export HF_HOME ?= $(CURDIR)/.cache/hf
export WANDB_DIR ?= $(CURDIR)/runs
export TORCHINDUCTOR_CACHE_DIR ?= $(CURDIR)/.cache/inductor
export JUPYTER_PLATFORM_DIRS := 1
export PYTHONUNBUFFERED := 1
# make reproduce WANDB=1: every run also logs to W&B (offline, into its run dir; `wandb sync` uploads later)
ifneq ($(WANDB),)
export SPARSEDEPTH_WANDB := $(WANDB)
endif

RUN := $(PY) -m sparsedepth.cli
REPRO := $(RUN) reproduce --profile $(PROFILE) --jobs $(JOBS) $(if $(FORCE),--force,)
NOTEBOOK_TARGETS := theory depth weight_decay seqlen gqa moe recipe summary

.PHONY: setup test test-faults test-gpu mutation reproduce figures bench lab clean $(NOTEBOOK_TARGETS)

setup: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name sparsedepth --display-name "Python (sparsedepth)" >/dev/null
	touch $@

# The offline-report check opens one HTML report in headless Chromium (Debian's package): installed here when
# missing and we may (root, as in CI containers); otherwise that one test skips and says so.
test: setup
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } \
		|| echo "chromium is not installed: the offline browser check of the HTML reports is skipped"
	$(PY) -m pytest -n 2 -q

# The fault suite with its randomised part (kill -9 at seeded random times, `sparsedepth run`), a few
# minutes on 2 cores; writes the table of faults and what the user sees to docs/faults.md.
test-faults: setup
	SPARSEDEPTH_FAULTS=full SPARSEDEPTH_FAULTS_DOC=docs/faults.md $(PY) -m pytest -q tests/test_faults.py

# The GPU tier (tests/gpu, marker `cuda`): run it on the accelerator whenever GPU code changes and commit the
# summary it writes to paper_results/bench/<device>/gpu-tests-<date>.json. On a machine with torch, triton and
# pytest but no virtual environment: make test-gpu PY=python3
test-gpu: $(if $(filter $(PY),.venv/bin/python),setup,)
	PYTHONPATH=$(CURDIR)/src:$(CURDIR)/tests/gpu$(if $(PYTHONPATH),:$(PYTHONPATH),) \
		$(PY) -m pytest tests/gpu -p gpu_summary -p no:cacheprovider -q -rs

# Mutation testing (mutmut, configured in pyproject.toml), outside `make test`: slow, so MUTANTS narrows it to
# mutant names, e.g. make mutation MUTANTS='sparsedepth.probes.*'
MUTANTS ?=
mutation: setup
	$(PY) -m pip install -q -r requirements-mutation.txt
	env -u PYTHONPATH $(PY) -m mutmut run $(MUTANTS); $(PY) -m mutmut results

reproduce: setup
	$(REPRO)
	$(PY) -m sparsedepth.paper.report.results_page --profile $(PROFILE) --readme

# Replot from results already under paper_results/ (no training): make figures PROFILE=gpu. The summary
# notebook writes paper_results/<profile>/RESULTS.md; the README's results block follows the scorecards.
figures: setup
	$(REPRO) --no-train
	$(PY) -m sparsedepth.paper.report.results_page --profile $(PROFILE) --readme

$(NOTEBOOK_TARGETS): setup
	$(REPRO) --only $@

bench: setup
	$(RUN) bench

# Extra flags for JupyterLab: make lab LAB_ARGS="--no-browser --ip=0.0.0.0 --port=8899"
LAB_ARGS ?=
# Containers run as root, which Jupyter refuses without --allow-root.
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: setup
	.venv/bin/jupyter lab $(LAB_ROOT) $(LAB_ARGS) notebooks/

clean:
	rm -rf build runs .cache .pytest_cache mutants
