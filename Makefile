# distgan: every target installs what it needs first (a fresh clone needs only python3 >= 3.10 and make).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/default.yaml
ARGS   ?=
# make compare: the blog's later versions against distgan's default, a few epochs each, one seed.
COMPARE_CONFIGS ?= configs/v3.2.yaml configs/v4.1.yaml configs/v5.yaml configs/final.yaml configs/default.yaml
COMPARE_EPOCHS  ?= 3
COMPARE_ARGS    ?=
# make blog: every version of the blog at its own budget (train.epochs), 3 seeds, each claim checked.
BLOG_ARGS ?=

.PHONY: help install data data-fashion evaluator train compare blog bench test test-slow stress versions-smoke lint format clean

help:
	@echo "make train   install, prepare MNIST, train $(CONFIG) (ARGS='train.epochs=1' to override)"
	@echo "make test    install, prepare MNIST, lint, run the test suite"
	@echo "make blog    every blog version at its budget over seeds 0,1,2, each claim checked: reports/blog/REPORT.md"
	@echo "make compare train and compare configs side by side (COMPARE_CONFIGS, COMPARE_EPOCHS) into reports/compare"
	@echo "make bench   distgan against a plain loop and the tutorial loop, 1 vs 2 processes, into reports/bench"
	@echo "make test-slow  the long end-to-end guards make test skips (CI runs both; about 20 minutes)"
	@echo "make data | data-fashion | stress | lint | format | clean"

install: $(STAMP)

# Re-runs only when pyproject.toml changes; a second `make install` is instant.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

data: install
	$(PY) -m distgan.data --dataset mnist --root data

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package when online downloads are impossible.
data-fashion: install
	test -d /usr/share/datasets/fashion-mnist || apt-get install -y -q dataset-fashion-mnist || true
	$(PY) -m distgan.data --dataset fashion_mnist --root data

# The MNIST classifier behind FID / IS / coverage: fitted once (about 2.5 minutes on 2 cores), then cached.
evaluator: data
	$(PY) -m distgan.evaluate fit --dataset mnist --root data

train: data
	$(PY) -m distgan.train --config $(CONFIG) $(ARGS)

compare: evaluator
	$(PY) -m distgan.compare $(COMPARE_CONFIGS) --epochs $(COMPARE_EPOCHS) --jobs auto --out reports/compare $(COMPARE_ARGS)

# Full budgets take many hours on 2 cores (the README gives the figures); BLOG_ARGS='--seeds 0 --max-epochs 2'
# runs the same machinery smaller. Interrupted runs resume with the same command.
blog: evaluator
	$(PY) -m distgan.blog --jobs auto --out reports/blog $(BLOG_ARGS)

# Side-by-side speed on this machine (about 9 minutes on 2 CPU cores); BENCH_ARGS='--device cuda --compile' on a GPU.
BENCH_ARGS ?=
bench: data
	$(PY) -m distgan.bench --out reports/bench $(BENCH_ARGS)

# The suite in under 15 minutes on 2 cores; the long end-to-end guards (marked slow) run in test-slow.
test: data lint
	$(PY) -m pytest -m "not slow and not versions" --durations=12

# CI runs it after make test: float64 invariance of every config, kill -9 / SIGTERM resume on 1 and 2
# processes, compare / blog / bench end to end, and 8 launches of the 2-process recipe in a row.
test-slow: data
	DISTGAN_STRESS_LAUNCHES=8 $(PY) -m pytest -m "slow or stress" --durations=12

# One epoch of every version of the blog (on a 512-image subset: v1 alone makes 200 G updates per D update).
versions-smoke: data
	$(PY) -m pytest -m versions -v

# The 2-process CPU recipe launched 20 times in a row: it must never abort at exit.
stress: data
	DISTGAN_STRESS_LAUNCHES=20 $(PY) -m pytest -m stress -v

lint: install
	$(VENV)/bin/ruff check distgan tests
	$(VENV)/bin/ruff format --check distgan tests

format: install
	$(VENV)/bin/ruff format distgan tests
	$(VENV)/bin/ruff check --fix distgan tests

clean:
	rm -rf runs wandb .pytest_cache .ruff_cache *.egg-info
