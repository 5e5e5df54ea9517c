"""Build script for lama_fast.

Metadata lives in pyproject.toml; this file adds what pyproject cannot say:

* the top-level ``kernels/`` directory is installed as ``lama_fast.kernels``;
* the optional compiled extension ``lama_fast._C``, built from ``csrc/``.

Build with the installed torch, never an isolated copy of it::

    pip install torch==2.13.0
    pip install --no-build-isolation -e ".[test]"

How the extension is decided (every decision is written, with its reason, to
``lama_fast/_build_info.json`` and read back by ``lama_fast._build``):

* ``LAMA_FAST_SKIP_EXTENSION=1``: build no extension at all.
* ``csrc/cpu/*.cpp`` -> a ``CppExtension`` when torch imports and sources exist.
* ``csrc/cuda/*.cu`` (and ``csrc/cuda/*.cpp``) are added, making it a
  ``CUDAExtension``, when a CUDA toolkit and a CUDA build of torch are both
  present, or when ``FORCE_CUDA=1`` (for a CUDA torch on a machine without a
  GPU). ``LAMA_FAST_SKIP_CUDA=1`` keeps the extension CPU-only.
  ``TORCH_CUDA_ARCH_LIST`` picks the GPU architectures (default when forced:
  ``DEFAULT_CUDA_ARCH_LIST``).
* ``MAX_JOBS`` (parallel compile jobs) is capped at the number of usable cores.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD_INFO_PATH = os.path.join(ROOT, "lama_fast", "_build_info.json")
DEFAULT_CUDA_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"
TRUE_VALUES = {"1", "true", "yes", "on"}


def env_flag(name: str) -> bool:
    """True when the environment variable is set to a yes-like value."""
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES


def relative_sources(*patterns: str) -> list[str]:
    """Sorted source paths matching the patterns, relative to the project root."""
    found: set[str] = set()
    for pattern in patterns:
        found.update(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    return sorted(found)


def count(sources: list[str]) -> str:
    """'1 source file' / 'N source files'."""
    return f"{len(sources)} source file" + ("" if len(sources) == 1 else "s")


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity, e.g. in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cap_max_jobs() -> str:
    """Set MAX_JOBS (read by torch's ninja build) to at most the number of usable cores."""
    cores = usable_cores()
    try:
        requested = int(os.environ.get("MAX_JOBS", cores))
    except ValueError:
        requested = cores
    jobs = max(1, min(requested, cores))
    os.environ["MAX_JOBS"] = str(jobs)
    return str(jobs)


def find_cuda_toolkit() -> str | None:
    """Root of a CUDA toolkit (has bin/nvcc and include/cuda_runtime.h), or None.

    torch's own CUDA_HOME is None for a CPU build of torch, and takes
    dirname(dirname(nvcc)), which is wrong when nvcc is a wrapper script in
    /usr/local/bin; so look ourselves.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for root in candidates:
        if root and os.path.isfile(os.path.join(root, "bin", "nvcc")) and os.path.isfile(
            os.path.join(root, "include", "cuda_runtime.h")
        ):
            return root
    return None


def pip_nvidia_dirs(header: str) -> tuple[list[str], list[str]]:
    """Include and library dirs of pip's nvidia-* packages (e.g. nvidia-cufft) that ship `header`."""
    include_dirs: list[str] = []
    library_dirs: list[str] = []
    for site_dir in sys.path:
        for include in glob.glob(os.path.join(site_dir, "nvidia", "*", "include")):
            if os.path.isfile(os.path.join(include, header)) and include not in include_dirs:
                include_dirs.append(include)
                lib = os.path.join(os.path.dirname(include), "lib")
                if os.path.isdir(lib):
                    library_dirs.append(lib)
    return include_dirs, library_dirs


def cufft_library(dirs: list[str]) -> str:
    """"cufft" when a libcufft.so is in ``dirs`` (or none is found: the toolkit's default path),
    else ":libcufft.so.N" for a versioned file only, as pip's nvidia-cufft ships."""
    for directory in dirs:
        if os.path.isfile(os.path.join(directory, "libcufft.so")):
            return "cufft"
    for directory in dirs:
        versioned = sorted(glob.glob(os.path.join(directory, "libcufft.so.[0-9]*")))
        if versioned:
            return ":" + os.path.basename(versioned[0])
    return "cufft"


def decide_extensions() -> tuple[list, dict, dict[str, str]]:
    """Return (ext_modules, cmdclass, build_info) for lama_fast._C."""
    cpu_sources = relative_sources("csrc/cpu/*.cpp")
    cuda_sources = relative_sources("csrc/cuda/*.cu", "csrc/cuda/*.cpp")
    info: dict[str, str] = {}

    if env_flag("LAMA_FAST_SKIP_EXTENSION"):
        reason = "not built: LAMA_FAST_SKIP_EXTENSION is set"
        return [], {}, {"cpu_extension": reason, "cuda_extension": reason}

    toolkit = find_cuda_toolkit()
    if toolkit and not os.environ.get("CUDA_HOME"):
        os.environ["CUDA_HOME"] = toolkit  # read by torch.utils.cpp_extension at import
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as error:  # ImportError, or a broken torch install
        reason = (
            f"not built: torch could not be imported at build time ({type(error).__name__}: {error}); "
            "install torch first and build with --no-build-isolation"
        )
        return [], {}, {"cpu_extension": reason, "cuda_extension": reason}

    info["torch_version"] = torch.__version__
    torch_cuda = torch.version.cuda
    forced = env_flag("FORCE_CUDA")

    # CUDA: list every reason it is not built, so one look at the file says it all.
    cuda_missing: list[str] = []
    if not cuda_sources:
        cuda_missing.append("no sources under csrc/cuda")
    if env_flag("LAMA_FAST_SKIP_CUDA"):
        cuda_missing.append("LAMA_FAST_SKIP_CUDA is set")
    if not forced:
        if torch_cuda is None:
            cuda_missing.append(f"torch {torch.__version__} is not a CUDA build")
        if toolkit is None:
            cuda_missing.append("no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)")
    use_cuda = not cuda_missing
    if use_cuda and forced and (torch_cuda is None or cpp_extension.CUDA_HOME is None):
        # A CPU torch has no libc10_cuda/libtorch_cuda to link against: fail now, clearly.
        sys.exit(
            f"FORCE_CUDA=1, but torch {torch.__version__} is not a CUDA build or torch finds no CUDA "
            "toolkit (CUDA_HOME). Install a CUDA build of torch, set CUDA_HOME, or unset FORCE_CUDA."
        )

    sources = cpu_sources + (cuda_sources if use_cuda else [])
    if not sources:
        info["cpu_extension"] = "not built: no sources under csrc/cpu"
        info["cuda_extension"] = "not built: " + "; ".join(cuda_missing)
        return [], {}, info

    info["max_jobs"] = cap_max_jobs()
    # -fopenmp: at::parallel_for is inlined into our sources and runs on one
    # thread unless they are compiled (and linked) with OpenMP.
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    cxx_flags = ["-O3", *openmp]
    extra_link_args = list(openmp)
    define_macros: list[tuple[str, str | None]] = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    library_dirs: list[str] = []
    libraries: list[str] = []
    extension_class = cpp_extension.CppExtension
    extra_compile_args: dict[str, list[str]] = {"cxx": cxx_flags}

    if use_cuda:
        extension_class = cpp_extension.CUDAExtension
        if forced and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            # No GPU to ask; otherwise torch picks the visible GPUs' architectures.
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = ["-O3"]
        nvidia_includes, nvidia_libs = pip_nvidia_dirs("cufft.h")
        include_dirs += nvidia_includes
        library_dirs += nvidia_libs
        cufft = cufft_library(library_dirs + [os.path.join(cpp_extension.CUDA_HOME or toolkit or "", "lib64")])
        if cufft.startswith(":"):
            # Only a versioned libcufft.so.N (pip's nvidia-cufft): link it by file name, and let the
            # loader find it where it is (torch's CUDA build loads the same soname itself).
            extra_link_args += [f"-l{cufft}"] + [f"-Wl,-rpath,{d}" for d in nvidia_libs]
        else:
            libraries.append(cufft)
        how = "forced by FORCE_CUDA=1" if forced else f"CUDA {torch_cuda}, toolkit {toolkit}"
        info["cuda_extension"] = f"built: {count(cuda_sources)} under csrc/cuda ({how})"
        info["cuda_arch_list"] = os.environ.get("TORCH_CUDA_ARCH_LIST", "chosen by torch from the visible GPUs")
    else:
        info["cuda_extension"] = "not built: " + "; ".join(cuda_missing)

    info["cpu_extension"] = (
        f"built: {count(cpu_sources)} under csrc/cpu" if cpu_sources else "not built: no sources under csrc/cpu"
    )

    extension = extension_class(
        name="lama_fast._C",
        sources=sources,
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        libraries=libraries,
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    )
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=cpp_extension.is_ninja_available())
    return [extension], {"build_ext": build_ext}, info


def write_build_info(info: dict[str, str]) -> None:
    """Record the decisions for lama_fast._build.build_info() (only when they changed)."""
    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    try:
        with open(BUILD_INFO_PATH, encoding="utf-8") as handle:
            if handle.read() == text:
                return
    except OSError:
        pass
    with open(BUILD_INFO_PATH, "w", encoding="utf-8") as handle:
        handle.write(text)


ext_modules, cmdclass, build_info = decide_extensions()
write_build_info(build_info)
for key in ("cpu_extension", "cuda_extension"):
    print(f"lama_fast {key}: {build_info[key]}", file=sys.stderr)

# Top-level kernels/ becomes lama_fast.kernels (and its subpackages, if any).
packages = find_packages(include=["lama_fast", "lama_fast.*"])
packages += ["lama_fast.kernels"] + ["lama_fast.kernels." + name for name in find_packages(where="kernels")]

setup(
    packages=packages,
    package_dir={"lama_fast.kernels": "kernels"},
    package_data={"lama_fast": ["_build_info.json", "assets/*.png", "assets/*.jpg", "assets/*.md",
                                "serve/static/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
