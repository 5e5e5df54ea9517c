# Everything runs in .venv, created or updated on demand; a stamp keyed on the
# packaging files (and the extension's sources) keeps re-runs fast.
#   make test              run the test suite (what CI runs)
#   make demo [CKPT=path]  parity check, a small benchmark, an inpainted sample
#   make venv EXTRAS=test          without Triton (its kernels' tests are then skipped)
#   (where nvcc is on PATH, make venv also installs nvidia-cufft: tests/test_cuda_ext.py compiles csrc/cuda with it)
#   bench/gpu_check.sh             on a GPU machine: GPU tests and GPU benchmarks (see its header)
#   make bench [BENCH_ARGS=...]    install the bench extra (peers), run bench/run_all.py (tens of minutes)
#   make cuda-build-check          compile and link the whole extension, CUDA part included, against a
#                                  CUDA build of torch (no GPU needed; .venv-cuda, several GB)

PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
TRITON_VERSION ?= 3.9.0
# triton: the GPU kernels, tested on the CPU under TRITON_INTERPRET=1 (tests/conftest.py sets it).
# serve: lama-fast serve (FastAPI, uvicorn), tested by tests/test_serve*.py; distributed: Ray Data
# (lama-fast inpaint --ray), tested by tests/test_distributed.py on a local two-node Ray cluster.
EXTRAS ?= test,triton,serve,distributed
PYTEST_ARGS ?=
CKPT ?=

VENV := .venv
VPY := $(VENV)/bin/python
comma := ,
STAMP := $(VENV)/.installed-torch$(TORCH_VERSION)-$(subst $(comma),-,$(EXTRAS))$(if $(findstring triton,$(EXTRAS)),-triton$(TRITON_VERSION))
EXTENSION_SOURCES := $(wildcard csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.cpp csrc/cuda/*.h)
SAMPLE_IMAGE := lama_fast/assets/astronaut.jpg
SAMPLE_MASK := lama_fast/assets/astronaut_mask.png
# Prints why the cpu backend cannot run bfloat16 here (no AVX512-BF16 or AMX), nothing where it can.
BF16_REASON = $(VPY) -c 'import torch, lama_fast; print(lama_fast.available_backends("cpu", torch.bfloat16)["cpu"] or "")'

.PHONY: venv test demo bench cuda-build-check clean distclean

venv: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# torch goes in first, pinned, so that nothing resolves "torch>=2.1" to a
# multi-GB CUDA build; the package is then built against it without isolation.
# Where nvcc is on PATH, tests/test_cuda_ext.py compiles csrc/cuda/*.cu, which include
# cufft.h: a toolkit may lack it, pip's nvidia-cufft ships it (a CUDA torch has it already).
$(STAMP): $(VPY) pyproject.toml setup.py $(EXTENSION_SOURCES)
	$(VPY) -c 'import sys, pip; sys.exit(tuple(int(p) for p in pip.__version__.split(".")[:2]) < (21, 3))' \
		|| $(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install "torch==$(TORCH_VERSION)"
	$(VPY) -m pip install "setuptools>=64" wheel
	if command -v nvcc >/dev/null 2>&1; then $(VPY) -m pip install nvidia-cufft; fi
	$(VPY) -m pip install --no-build-isolation -e ".[$(EXTRAS)]" "torch==$(TORCH_VERSION)" \
		$(if $(findstring triton,$(EXTRAS)),"triton==$(TRITON_VERSION)")
	rm -f $(VENV)/.installed-*
	touch $@

test: venv
	$(VPY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/lama-fast parity
	@why=$$($(BF16_REASON)); \
	if [ -z "$$why" ]; then \
		set -x; $(VENV)/bin/lama-fast parity --dtype bfloat16 --sizes 512; \
	else \
		echo "demo: skipping the bfloat16 parity check and benchmark: $$why"; \
	fi
	$(VENV)/bin/lama-fast bench --sizes 512 --repeats 3 --backends cpu,reference
	@if [ -z "$$($(BF16_REASON))" ]; then \
		set -x; $(VENV)/bin/lama-fast bench --sizes 512 --repeats 3 --backends cpu --dtype bfloat16; \
	fi
	mkdir -p out
	$(VENV)/bin/lama-fast inpaint $(SAMPLE_IMAGE) $(SAMPLE_MASK) --hd-strategy crop --crop-trigger-size 256 \
		--crop-margin 64 --explain out/astronaut_crop_plan.png
	@if [ -n "$(CKPT)" ]; then \
		mkdir -p out && \
		echo "$(VENV)/bin/lama-fast inpaint $(SAMPLE_IMAGE) $(SAMPLE_MASK) -o out/astronaut_inpainted.png --checkpoint $(CKPT) --overwrite" && \
		$(VENV)/bin/lama-fast inpaint $(SAMPLE_IMAGE) $(SAMPLE_MASK) -o out/astronaut_inpainted.png --checkpoint "$(CKPT)" --overwrite; \
	else \
		echo "demo: no CKPT=path/to/big-lama given, skipping the inpainting of $(SAMPLE_IMAGE)"; \
	fi

# The bench extra's packages go in beside the pinned torch, read from pyproject.toml
# so that the editable package (and its extension) is not rebuilt for it.
bench: venv
	@if $(VPY) -c 'import tomllib' 2>/dev/null; then \
		set -x; $(VPY) -m pip install "torch==$(TORCH_VERSION)" $$($(VPY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))'); \
	else \
		set -x; $(VPY) -m pip install --no-build-isolation -e ".[bench]" "torch==$(TORCH_VERSION)"; \
	fi
	$(VPY) bench/run_all.py $(BENCH_ARGS)

# The CUDA extension cannot run here, but it can be built: in a copy of the tree (so that the
# tree's own extension and build record stay as they are), against a CUDA build of torch, for
# sm_80 and sm_90, then imported to see its CUDA kernels registered.
CUDA_TORCH_VERSION ?= 2.14.1
CUDA_CHECK_DIR := build/cuda-check
cuda-build-check:
	test -x .venv-cuda/bin/python || $(PYTHON) -m venv .venv-cuda
	.venv-cuda/bin/python -m pip install "torch==$(CUDA_TORCH_VERSION)" "setuptools>=64" wheel ninja nvidia-cufft \
		numpy pillow tqdm safetensors
	rm -rf $(CUDA_CHECK_DIR) && mkdir -p $(CUDA_CHECK_DIR)
	git ls-files -co --exclude-standard | grep -v -e '^\.venv' -e '^build/' | tar cf - -T - | tar xf - -C $(CUDA_CHECK_DIR)
	cd $(CUDA_CHECK_DIR) && rm -f lama_fast/_C*.so && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" \
		$(CURDIR)/.venv-cuda/bin/python setup.py -q build_ext --inplace
	cd $(CUDA_CHECK_DIR) && $(CURDIR)/.venv-cuda/bin/python -c "import torch; \
		from lama_fast.backends.cuda import cuda_kernels_reasons as why; assert not why(), why(); \
		print('cuda-build-check: lama_fast._C with CUDA kernels, built and imported with torch', torch.__version__)"

# Removing the in-tree build products also drops the install stamp, so the
# next make rebuilds them (the editable install reads them from the tree).
clean:
	rm -rf build dist out *.egg-info .pytest_cache
	rm -f lama_fast/_build_info.json lama_fast/_C*.so
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -f $(VENV)/.installed-*

distclean: clean
	rm -rf $(VENV) .venv-cuda
