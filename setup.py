"""Build of nl3dmm: the Python package (engine/ -> nl3dmm, kernels/ -> nl3dmm.kernels) and
the pybind11 extension nl3dmm._C from csrc/.

The CPU kernels (g++ -O3, OpenMP) are always built. The CUDA sources (csrc/**/*.cu) are
compiled with nvcc when it is found and linked with the static CUDA runtime, so the module
never depends on libcudart or on torch and imports on machines without a GPU.

    NL3DMM_CUDA=0   never build CUDA code
    NL3DMM_CUDA=1   require nvcc (fail the build if it is missing)
    unset           build CUDA code when nvcc is found
    NL3DMM_CUDA_ARCHS="80;90"   SASS targets (PTX for the highest is always added)
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"
HOST_HARNESS = CSRC / "cuda" / "host"


def find_cuda() -> tuple[str, Path] | None:
    """(nvcc command, toolkit root) or None. The toolkit root comes from CUDA_HOME or from
    nvcc's own --dryrun TOP= line: `which nvcc` may be a wrapper living elsewhere."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = str(Path(home) / "bin" / "nvcc") if home else shutil.which("nvcc")
    if not nvcc or not Path(nvcc).exists():
        return None
    if home:
        return nvcc, Path(home)
    try:
        dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", "/dev/null", "-o", "/dev/null"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"TOP=(\S+)", dry.stdout + dry.stderr)
    return (nvcc, Path(match.group(1)).resolve()) if match else None


def cuda_requested() -> bool | None:
    flag = os.environ.get("NL3DMM_CUDA", "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    return None


class BuildWithCuda(build_ext):
    """build_ext that first compiles each .cu with nvcc and links the objects in."""

    def build_extension(self, ext):
        requested = cuda_requested()
        cuda = None if requested is False else find_cuda()
        if requested and cuda is None:
            raise RuntimeError("NL3DMM_CUDA=1 but nvcc was not found (set CUDA_HOME or PATH)")
        if cuda is not None:
            nvcc, toolkit = cuda
            objects = self.compile_cuda(nvcc, toolkit)
            ext.extra_objects = list(ext.extra_objects or []) + objects
            ext.define_macros = list(ext.define_macros or []) + [("NL3DMM_WITH_CUDA", "1")]
            libdir = next((p for p in (toolkit / "targets/x86_64-linux/lib", toolkit / "lib64",
                                       toolkit / "targets/sbsa-linux/lib", toolkit / "lib")
                           if (p / "libcudart_static.a").exists()), None)
            if libdir is None:
                raise RuntimeError(f"libcudart_static.a not found under {toolkit}")
            ext.library_dirs = list(ext.library_dirs or []) + [str(libdir)]
            ext.libraries = list(ext.libraries or []) + ["cudart_static", "rt", "pthread", "dl"]
            print(f"nl3dmm: building CUDA kernels with {nvcc} (toolkit {toolkit})")
        else:
            print("nl3dmm: building without CUDA (nvcc not found or NL3DMM_CUDA=0)")
        super().build_extension(ext)

    def compile_cuda(self, nvcc: str, toolkit: Path) -> list[str]:
        archs = [a.strip() for a in os.environ.get("NL3DMM_CUDA_ARCHS", "80;90").split(";") if a.strip()]
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
        out_dir = Path(self.build_temp) / "cuda"
        out_dir.mkdir(parents=True, exist_ok=True)
        objects = []
        for source in sorted(CSRC.rglob("*.cu")):
            obj = out_dir / (source.stem + ".o")
            # --fmad=false: contracting a*b+c into one rounding would move snapped vertex
            # positions and depth keys off the CPU and Triton kernels' bits (same ids everywhere).
            cmd = [nvcc, "-c", str(source), "-o", str(obj), "-O3", "-std=c++17", "--threads", "0", "--fmad=false",
                   "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
                   f"-I{CSRC}", *gencode]
            print(" ".join(cmd))
            subprocess.run(cmd, check=True)
            objects.append(str(obj))
        return objects


extension = Pybind11Extension(
    "nl3dmm._C",
    # csrc/cuda/host is the test harness that runs the CUDA sources on the CPU (built by
    # tests/cuda_host.py with g++), not part of the extension.
    sources=[str(p.relative_to(ROOT)) for p in sorted(CSRC.rglob("*.cpp"))
             if HOST_HARNESS not in p.parents],
    include_dirs=[str(CSRC)],
    extra_compile_args=["-O3", "-fopenmp", "-fno-math-errno"],
    extra_link_args=["-fopenmp"],
    cxx_std=17,
)

setup(
    name="nl3dmm",
    version="0.1.0",
    description="Nonlinear 3D Face Morphable Model with a custom differentiable renderer",
    python_requires=">=3.10",
    packages=["nl3dmm", *(f"nl3dmm.{p}" for p in find_packages("engine")), "nl3dmm.kernels"],
    package_dir={"nl3dmm": "engine", "nl3dmm.kernels": "kernels"},
    package_data={"nl3dmm": ["assets/*", "assets/*/*", "assets/*/*/*"]},
    ext_modules=[extension],
    cmdclass={"build_ext": BuildWithCuda},
    # Face detection in `nl3dmm reconstruct` (engine/tasks/detect.py), no download at run time:
    # dlib-bin is dlib as binary wheels (dlib's HOG detector is built in; `pip install dlib` would
    # compile for a long time); opencv-python-headless ships the Haar profile cascade, which
    # OpenCV 5 no longer does.
    install_requires=["numpy", "scipy", "pillow", "torch>=2.4", "tqdm", "tensorboard",
                      "opencv-python-headless>=4.5,<5", "dlib-bin>=19.24"],
    extras_require={
        # triton: tests/test_triton.py runs the Triton kernels through its CPU interpreter.
        # Triton publishes Linux wheels only.
        # trimesh: tests/test_reconstruct.py opens the OBJ files `nl3dmm reconstruct` writes.
        "test": ["pytest", "pytest-benchmark", "trimesh", "triton; platform_system == 'Linux'"],
        "triton": ["triton"],
    },
    entry_points={"console_scripts": ["nl3dmm=nl3dmm.cli:main"]},
    zip_safe=False,
)
