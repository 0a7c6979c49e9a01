# Two commands do all set-up on a fresh machine (Python 3.11 + pip):
#   make demo   installs, then runs a real `signal` sweep on embedded defaults (local Ray, MLflow in results/mlflow.db)
#   make test   installs, then runs the whole test suite (slow tests included)
PY ?= python3

.install-stamp: pyproject.toml
	$(PY) -m pip install --quiet torch==2.13.0   # pinned first: an unpinned torch pulls GBs of CUDA packages
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps flyvis==1.2.0   # flyvis: its connectome JSON only, never imported
	touch $@

install: .install-stamp

demo: install
	$(PY) -m tuner sweep --space chaotic_10k --scale cpu --samples 8

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not slow"

.PHONY: install demo test test-fast
