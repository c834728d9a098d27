"""The CUDA sources run on the CPU: build the host harness (csrc/cuda/host/driver.cpp with
csrc/cuda/render_cuda.cu, compiled by g++ through csrc/cuda/host_shim.h) and drive it as a
backend, so that the tests of the CUDA kernels read like any other backend's.

Builds are cached by a hash of the sources, the compiler and the flags, under
$NL3DMM_HOST_BUILD_DIR (default: <tempdir>/nl3dmm-cuda-host). A variant is "plain" (-O2),
"asan" (AddressSanitizer + UndefinedBehaviorSanitizer, no recovery) or "tsan"
(ThreadSanitizer). Mutants are the real sources with textual substitutions, built the same way.

Each kernel call is one process: the backend writes the call's tensors to a directory, the
driver runs the CUDA entry point and writes every buffer back. A sanitized driver is therefore
just another process with its own runtime, which is why this is an executable and not a
library loaded into Python (an ASan or TSan library cannot be loaded into an unsanitized
interpreter without preloading its runtime into the whole of Python).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from nl3dmm.render.backends.cuda import CudaBackend

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc"
COMPILER = os.environ.get("CXX", "g++")
VARIANTS = {
    "plain": ["-O2"],
    "asan": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=all"],
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
}
# Sanitizers report on stderr and exit non-zero; leaks are not this harness's concern
# (the driver exits right after the call).
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "TSAN_OPTIONS": "halt_on_error=0:exitcode=66:history_size=4",
}
# Buffers each entry point writes; every other tensor it gets must come back unchanged.
OUTPUTS = {
    "rasterize_forward": {"rast"},
    "rasterize_backward": {"grad_pos"},
    "interpolate_forward": {"out"},
    "interpolate_backward": {"grad_attr", "grad_rast"},
    "sample_texture_forward": {"out"},
    "sample_texture_backward": {"grad_tex", "grad_uv"},
    "antialias_forward": {"out"},
    "antialias_backward": {"grad_color", "grad_pos"},
    "interpolate_derivatives_forward": {"out"},
    "interpolate_derivatives_backward": {"grad_attr"},
    "sample_texture_mip_forward": {"out"},
    "sample_texture_mip_backward": {"grad_tex", "grad_uv", "grad_uv_da"},
    "render_textured_forward": {"out"},
    "render_textured_backward": {"grad_tex", "grad_background", "grad_mask", "grad_rast", "grad_uv"},
}
SCRATCH_BYTE = 0xA5  # fill of fresh scratch: the kernels must initialise what they use


class HarnessError(RuntimeError):
    """The driver failed: a sanitizer report, a crash or an exception in the entry point."""


def build_dir() -> Path:
    return Path(os.environ.get("NL3DMM_HOST_BUILD_DIR") or Path(tempfile.gettempdir()) / "nl3dmm-cuda-host")


def _sources() -> dict[str, str]:
    files = sorted(p for p in CSRC.rglob("*") if p.suffix in (".h", ".cu") or p.parent.name == "host")
    return {str(p.relative_to(CSRC)): p.read_text() for p in files if p.is_file()}


def _compiler_version() -> str:
    return subprocess.run([COMPILER, "--version"], capture_output=True, text=True, check=True).stdout


def mutate(path: str, old: str, new: str, sources: Optional[dict[str, str]] = None) -> dict[str, str]:
    """csrc sources with `old` replaced by `new` in csrc/<path>; `old` must occur exactly once,
    so that a mutant cannot silently stop mutating when the source changes."""
    sources = dict(sources or _sources())
    count = sources[path].count(old)
    if count != 1:
        raise AssertionError(f"mutation of {path}: expected one occurrence of {old!r}, found {count}")
    sources[path] = sources[path].replace(old, new)
    return sources


# The driver's own inputs: its object is shared by every build of a variant (mutants change
# the kernels only), which saves a third of each mutant's compile time.
DRIVER_SOURCES = ("cuda/host/driver.cpp", "cuda/host_shim.h", "cuda/render_cuda.h", "render_args.h",
                  "render_args_fields.h")


def _compile(variant: str, sources: dict[str, str], unit: str, name: str) -> Path:
    """Object file of csrc/<unit> compiled from `sources`, cached by their hash."""
    flags = VARIANTS[variant]
    digest = hashlib.sha256(repr((sorted(sources.items()), unit, flags, _compiler_version())).encode()).hexdigest()[:16]
    target = build_dir() / f"{name}-{variant}-{digest}.o"
    if target.exists():
        return target
    build_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-{variant}-", dir=build_dir()))
    try:
        for rel, text in sources.items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(text)
        language = ["-x", "c++"] if unit.endswith(".cu") else []
        cmd = [COMPILER, "-std=c++20", "-pthread", *flags, f"-I{work}", *language, "-c", str(work / unit),
               "-o", str(work / "out.o")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise HarnessError(f"compiling {unit} ({variant}) failed:\n{' '.join(cmd)}\n{done.stderr}")
        (work / "out.o").replace(target)  # atomic: a concurrent build of the same key is harmless
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def build(variant: str = "plain", sources: Optional[dict[str, str]] = None) -> Path:
    """The driver executable for `variant`, compiled from `sources` (default: csrc as it is)."""
    sources = sources or _sources()
    driver_object = _compile(variant, {k: sources[k] for k in DRIVER_SOURCES}, DRIVER_SOURCES[0], "driver")
    kernels_object = _compile(variant, sources, "cuda/render_cuda.cu", "kernels")
    target = build_dir() / f"{kernels_object.stem}-{driver_object.stem}"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        cmd = [COMPILER, "-pthread", *VARIANTS[variant], str(kernels_object), str(driver_object), "-o", str(partial)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise HarnessError(f"linking the {variant} harness failed:\n{' '.join(cmd)}\n{done.stderr}")
        partial.replace(target)
    return target


class HostCudaBackend(CudaBackend):
    """The CUDA backend's allocate-and-launch code (ExtensionBackend) with the CUDA entry
    points run by the host harness on CPU tensors. Fresh outputs are NaN-poisoned and fresh
    scratch is filled with garbage, so a result can only pass if the kernels wrote it."""

    name = "cuda-host"

    def __init__(self, driver: Path, workers: int = 1, chunk: int = 64) -> None:
        self.driver, self.workers, self.chunk = Path(driver), workers, chunk
        self.last_stderr = ""

    def unavailable_reason(self) -> Optional[str]:
        return None

    def _require(self, **tensors: torch.Tensor) -> None:
        for name, t in tensors.items():
            if t.device.type != "cpu":
                raise ValueError(f"the host harness runs on CPU tensors, but {name} is on {t.device}")

    def _stream(self, like: torch.Tensor) -> int:
        return 0

    def _output(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.full(shape, float("nan"), dtype=like.dtype)

    def _scratch(self, nbytes: int, like: torch.Tensor) -> Optional[torch.Tensor]:
        if nbytes == 0:
            return None
        return torch.full(((nbytes + 7) // 8 * 8,), SCRATCH_BYTE, dtype=torch.uint8).view(torch.int64)

    def _call(self, op: str, like: torch.Tensor, **args: Any) -> None:
        build_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="call-", dir=build_dir()) as tmp:
            folder = Path(tmp)
            lines, before = [op], {}
            for key, value in args.items():
                if isinstance(value, torch.Tensor):
                    data = value.contiguous().numpy().tobytes()
                    (folder / f"{key}.bin").write_bytes(data)
                    before[key] = data
                    lines.append(f"{key} @{key}")
                else:
                    lines.append(f"{key} {int(value)}")
            (folder / "call.txt").write_text("\n".join(lines) + "\n")
            cmd = [str(self.driver), "--workers", str(self.workers), "--chunk", str(self.chunk), str(folder)]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **SANITIZER_ENV})
            self.last_stderr = done.stderr
            if done.returncode != 0:
                raise HarnessError(f"{op} failed in {self.driver.parent.name} (rc {done.returncode}):\n{done.stderr}")
            for key, data in before.items():
                after = (folder / f"{key}.bin").read_bytes()
                if key in OUTPUTS[op] or key in ("status", "scratch"):
                    tensor = args[key]
                    tensor.copy_(torch.from_numpy(np.frombuffer(after, dtype=_numpy_dtype(tensor)).copy())
                                 .view(tensor.shape))
                elif after != data:
                    raise HarnessError(f"{op} wrote into its input {key}")


def _numpy_dtype(t: torch.Tensor) -> np.dtype:
    return torch.empty(0, dtype=t.dtype).numpy().dtype
