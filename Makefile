# Two commands on a fresh machine: `make demo` and `make test`. Both set up first.
PYTHON ?= python3
TORCH_CPU ?= torch==2.13.0

.PHONY: setup demo test test-slow lint

# Keep an installed torch (a GPU user's CUDA build included); install the CPU build only when
# none is importable, because an unpinned `torch` pulls several GB of CUDA packages.
setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH_CPU)"
	@$(PYTHON) -m pip install -q -e ".[dev,digits,bench,torchode]"
	@# k-diffusion (a benchmark peer) without its training stack: its samplers need torchsde only
	@# (in the bench extra); its torchvision pin would replace the installed torch.
	@$(PYTHON) -m pip install -q --no-deps "k-diffusion==0.1.1.post1"

demo: setup
	$(PYTHON) -m scoresde.cli demo --workdir=demo_out

# One worker per core, each test file on one worker (module fixtures such as the benchmark's
# quick run are built once): 7.5 min on 2 cores, 14 min in one process.
test: setup
	$(PYTHON) -m pytest -q -n auto --dist loadfile

test-slow: setup
	$(PYTHON) -m pytest -q -m slow

lint: setup
	$(PYTHON) -m ruff check scoresde tests benchmarks
