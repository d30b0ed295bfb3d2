# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

## The main job on the bundled model: heat maps of the sample scenes in out/demo/
demo: $(STAMP)
	$(VENV)/bin/eclip demo --out out/demo

## The test suite (tiny seeded models and data; a few minutes on 2 cores)
test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench scripts

clean:
	rm -rf out .pytest_cache
