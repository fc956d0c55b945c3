# Two entry points for a fresh machine: `make demo` and `make test` (README.md).
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# torch/torchvision versions that this machine's pip takes from local disk (a CUDA build; runs on CPU).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip prints a line per package for local index folders that do not exist; they are noise here.
QUIET  := 2>&1 | grep -v '^WARNING: Location' || [ $${PIPESTATUS[0]} -eq 0 ]

.PHONY: env data demo test faults clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH) $(QUIET)
	$(PY) -m pip install -q -e '.[test,trackers,export]' $(QUIET)
	touch $@

# The real Fashion-MNIST, from Debian's dataset-fashion-mnist when we may install it.
data:
	@if [ ! -f $(FMNIST) ] && [ -z "$$SOTAKIT_DATA" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	      || echo "could not install dataset-fashion-mnist; sotakit will try a download"; \
	  else echo "not root: run 'sudo apt-get install dataset-fashion-mnist' or set SOTAKIT_DATA"; fi; \
	fi

demo: env data
	$(PY) -m sotakit train --recipe fashion-mnist-demo

# One pytest worker per core (pytest-xdist), each with one intra-op thread (tests/conftest.py).
test: env data
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n auto --dist worksteal

# The full fault-injection tier (about 15 minutes here): writes docs/reliability.md.
faults: env data
	$(PY) tests/faults/run_full.py --out docs/reliability.md

clean:
	rm -rf $(VENV) runs .pytest_cache
