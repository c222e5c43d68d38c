# One entry point for people and CI. Every target creates .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench train clean chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: an unpinned resolver pulls a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipeline.ops.demo

# The viewer's browser tests drive Debian's chromium (never a downloaded browser build).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	@echo "installing Debian's chromium for the viewer's browser tests (apt-get)"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

chromium: $(CHROMIUM)

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/model.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/elastic.py
	$(BIN)/python bench/readers.py
	$(BIN)/python bench/viewer.py
	$(BIN)/python bench/readme.py

# Every shipped checkpoint (hgn, isdnet_like, deep_only, the ablations, a 2nd hgn seed), one
# budget (hgn_model/configs/shipped.yaml), 2 models at a time; reruns resume. Hours on 2 cores.
train: $(STAMP)
	$(BIN)/python bench/train_shipped.py --jobs 2

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
