# Attention, from Theory to Triton: two commands from a fresh clone.
#   make book   - create .venv, install everything, execute every notebook, build the site
#   make test   - create .venv if needed, run the whole test suite
#
# How torch gets installed (the first pip command of the install; `pip install -e ".[EXTRAS]"` follows):
#   TORCH_SPEC      the requirement handed to pip for torch. Default `torch>=2.11` (pyproject's floor): pip
#                   takes the newest torch its indexes offer, which from PyPI on Linux x86-64 is a CUDA build
#                   (several GB with its CUDA libraries).
#   TORCH_INDEX_URL an extra package index for that one pip command, passed as `--extra-index-url`; empty by
#                   default (no extra index). PyTorch publishes CPU-only wheels (a few hundred MB, no Triton
#                   pinned) at https://download.pytorch.org/whl/cpu, so on a machine without a GPU:
#                     make test TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#                   and add TORCH_SPEC=torch==2.13.0 for the version CI tests. pip takes the highest version
#                   matching TORCH_SPEC on PyPI and that index together; a CPU wheel's local version
#                   (`2.13.0+cpu`) sorts above the same release on PyPI, so the CPU build wins.
# The install runs once per venv (the stamp $(VENV)/.installed, renewed when pyproject.toml changes): to
# switch torch builds, `rm -rf $(VENV)` first. CI (.ci/run) passes only TORCH_SPEC=torch==2.13.0: the pip
# configuration of its machine already offers a CPU wheel of that version, so it sets no extra index.
# Both variables apply to `make test-triton-compat` too (below).

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch>=2.11
TORCH_INDEX_URL ?=
EXTRAS     ?= triton,interp,course,dev
PYTEST_ARGS ?=
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed
TORCH_INDEX := $(if $(strip $(TORCH_INDEX_URL)),--extra-index-url $(strip $(TORCH_INDEX_URL)))

.PHONY: help venv test test-fast test-triton-compat book lab labs sync check-sync grade clean

help:
	@echo "make book   - install into $(VENV), execute every notebook, build the site into _build/html"
	@echo "make test   - install into $(VENV) if needed, run pytest (attnlib, tools, pairing, book, nbval)"
	@echo "make test-triton-compat - the kernel tests under Triton 3.6 (Colab's) in a venv of their own"
	@echo "Options: TORCH_SPEC='$(TORCH_SPEC)' (torch's requirement), TORCH_INDEX_URL='$(TORCH_INDEX_URL)' (extra index for it;"
	@echo "  https://download.pytorch.org/whl/cpu gives a CPU-only torch), EXTRAS=$(EXTRAS), VENV=$(VENV), PYTEST_ARGS"
	@echo "make lab    - start JupyterLab"
	@echo "make labs   - regenerate labs/ from solutions/"
	@echo "make sync   - regenerate every .ipynb from its paired .md"
	@echo "make grade LAB=lab01_scaled_dot_product SUBMISSIONS=dir OUT=dir - grade submissions"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest $(PYTEST_ARGS)

# The library and tool tests only: no notebook execution, no book build.
test-fast: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The kernel tests and the kernel labs' code cells again under the Triton that Colab and the course's GPU
# image carry (3.6, in its CPU interpreter here) with the newest NumPy: the kernels must run there as well
# as on the newest Triton. Own venv (COMPAT_VENV), Triton from COMPAT_TRITON, torch from TORCH_SPEC and
# TORCH_INDEX_URL as above, all in one pip command. It needs a torch that does not pin another Triton: a
# CUDA build from PyPI requires the exact Triton it was built with, so asking for Triton 3.6 beside a newer
# torch does not resolve; a CPU build requires no Triton. Without a GPU:
#   make test-triton-compat TORCH_SPEC=torch==2.13.0 TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (CI passes only the TORCH_SPEC: its pip already offers that CPU wheel).
COMPAT_VENV   ?= .venv-triton-compat
COMPAT_TRITON ?= triton==3.6.0
test-triton-compat:
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)" "$(COMPAT_TRITON)" numpy matplotlib tqdm pytest pytest-xdist hypothesis
	$(COMPAT_VENV)/bin/python -c "import numpy, torch, triton; print('compat run: torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"
	PYTHONPATH=$(CURDIR) MPLBACKEND=Agg $(COMPAT_VENV)/bin/python -m pytest -p no:cacheprovider -o addopts=-ra -n 2 \
		tests/test_kernels_*.py tests/test_bench_harness.py
	PYTHONPATH=$(CURDIR) MPLBACKEND=Agg TRITON_INTERPRET=1 $(COMPAT_VENV)/bin/python tools/run_md_cells.py \
		solutions/lab1[5-8]_*.md chapters/08_gpu_profiling.md

book: $(STAMP)
	env -u MPLBACKEND $(BIN)/jupyter-book build . --builder html  # the inline backend draws the figures
	@echo
	@echo "The site is built: open file://$(CURDIR)/_build/html/index.html"

lab: $(STAMP)
	$(BIN)/jupyter lab

labs: $(STAMP)
	$(BIN)/python tools/make_labs.py

sync: $(STAMP)
	$(BIN)/python tools/sync.py

check-sync: $(STAMP)
	$(BIN)/python tools/sync.py --check
	$(BIN)/python tools/make_labs.py --check

grade: $(STAMP)
	$(BIN)/python tools/grade.py $(LAB) $(SUBMISSIONS) --out $(OUT)

clean:
	rm -rf _build .jupyter_cache .pytest_cache
