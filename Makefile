# The README's two commands: `make quickstart` and `make test`.
PY      ?= python3.11
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup quickstart test bench clean

setup: $(STAMP)

# Idempotent: re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip setuptools wheel
	# torch first, pinned, so nothing can pull a CUDA build on a CPU machine.
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e '.[test]'
	touch $(STAMP)

quickstart: setup
	$(PYTHON) -m tools.quickstart

test: setup
	$(PYTHON) -m pytest -q -ra tests

bench: setup
	$(PYTHON) -m tools.bench.train_step

clean:
	rm -rf $(VENV) runs .cache
