# Two set-up commands work on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# CPU build of torch, installed first and pinned so nothing pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
DATA ?= $(if $(wildcard ../shared/data/amazon-scientific/items.jsonl),../shared/data/amazon-scientific,)
OUT ?= out/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test bench install clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -c constraints.txt -e '.[dev,multilingual,bench]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(PY) -m kgrec.demo --out $(OUT) $(if $(DATA),--data $(DATA),)

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py --quick

clean:
	rm -rf $(OUT) .pytest_cache
