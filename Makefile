# Two commands from a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
OUT     ?= out/demo

.PHONY: venv demo test lint clean

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

# torch==2.13.0 first: a plain `torch` requirement would pull the CUDA build (several GB).
$(STAMP): $(VPY) pyproject.toml
	@$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install --quiet torch==2.13.0
	$(VPY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mridip demo --out $(OUT)

# two worker processes, one torch thread each (the two cores of a small machine); a test file
# stays on one worker, so its module fixtures (a Ray session, cached fits) are built once
test: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(VPY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VPY) -m ruff check mridip tests examples
	$(VPY) -m ruff format --check mridip tests examples
	$(VPY) -m mypy mridip

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
