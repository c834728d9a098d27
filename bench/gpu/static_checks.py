"""Static GPU checks, no GPU needed: registers, spills and shared memory of every kernel.

    python bench/gpu/static_checks.py                 # writes bench/results/ptxas-sm90.md
    python bench/gpu/static_checks.py --arch 90 --out FILE.md [--no-cuda] [--no-triton]

CUDA: each csrc/**/*.cu is compiled for sm_<arch> as setup.py compiles it, plus -lineinfo and
-Xptxas -v, and ptxas's own report is parsed. Triton: every kernel variant the ops launch on a
GPU (the compiled path's block sizes, recorded by running the ops through the interpreter with
those block sizes) is compiled ahead of time with the installed Triton, and its resources are
read from the cubin with `cuobjdump -res-usage` (Triton's bundled copy): without a GPU
`CompiledKernel.n_regs` is empty. tests/test_gpu_static.py fails on any spill.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"
# The flags of setup.py's compile_cuda that change code generation, plus the reporting ones.
NVCC_FLAGS = ["-O3", "-std=c++17", "--fmad=false", "-lineinfo", "-Xptxas", "-v"]


@dataclass
class KernelResources:
    source: str       # "cuda" or "triton <version>"
    kernel: str       # demangled name, or Triton kernel name with its constexprs
    registers: int
    stack: int        # bytes of stack frame (local memory that is not a spill)
    spill_stores: int
    spill_loads: int
    shared: int       # bytes of static shared memory

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


# ---- CUDA: nvcc -Xptxas -v ------------------------------------------------------------------

def parse_ptxas(text: str, source: str = "cuda") -> list[KernelResources]:
    """Kernels of a ptxas -v report (entry functions only; device functions are inlined)."""
    found: list[KernelResources] = []
    current: Optional[dict] = None
    for line in text.splitlines():
        entry = re.search(r"Compiling entry function '([^']+)'", line)
        if entry:
            current = {"kernel": entry.group(1), "stack": 0, "spill_stores": 0, "spill_loads": 0,
                       "shared": 0}
            continue
        if current is None:
            continue
        frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if frame:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, frame.groups())
        used = re.search(r"Used (\d+) registers", line)
        if used:
            smem = re.search(r"(\d+) bytes smem", line)
            found.append(KernelResources(source, current["kernel"], int(used.group(1)),
                                         current["stack"], current["spill_stores"],
                                         current["spill_loads"], int(smem.group(1)) if smem else 0))
            current = None
    return found


def demangle(names: list[str]) -> list[str]:
    if not names or shutil.which("c++filt") is None:
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return lines if len(lines) == len(names) else names


def cuda_kernel_resources(arch: int = 90, nvcc: Optional[str] = None) -> list[KernelResources]:
    """Compile every csrc/**/*.cu for sm_<arch> and parse ptxas's report."""
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc is not on PATH")
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in sorted(CSRC.rglob("*.cu")):
            cmd = [nvcc, "-c", str(source), "-o", str(Path(tmp) / (source.stem + ".o")),
                   *NVCC_FLAGS, f"-I{CSRC}", f"-gencode=arch=compute_{arch},code=sm_{arch}"]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"nvcc failed on {source.name}:\n{run.stderr[-4000:]}")
            found += parse_ptxas(run.stdout + run.stderr)
    for kernel, name in zip(found, demangle([k.kernel for k in found])):
        kernel.kernel = re.sub(r"\(anonymous namespace\)::|nl3dmm::", "", name)
    return found


def cuda_command(arch: int = 90) -> str:
    return (f"nvcc -c csrc/cuda/<file>.cu {' '.join(NVCC_FLAGS)} -Icsrc "
            f"-gencode=arch=compute_{arch},code=sm_{arch}")


# ---- Triton: the compiled path's launch variants ---------------------------------------------

@contextlib.contextmanager
def gpu_block_sizes() -> Iterator[None]:
    """Make the kernels' launch helpers pick the block sizes they pick for CUDA tensors, so that
    an interpreted run launches (and records) exactly the GPU path's variants."""
    import torch

    from nl3dmm.kernels import (antialias, derivatives, interpolate, rasterize, runtime, texture, texture_mip,
                                textured)

    cuda = torch.device("cuda")
    saved = [(m, name, getattr(m, name)) for m in (rasterize, interpolate, texture, derivatives, texture_mip,
                                                    textured, antialias)
             for name in ("pixel_block", "triangle_tile", "clip_triangle_tile") if hasattr(m, name)]
    try:
        for module, name, _ in saved:
            real = getattr(runtime, name)
            setattr(module, name, lambda device, n, *more, real=real, **kw: real(cuda, n, *more, **kw))
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def gpu_launch_variants() -> list[tuple]:
    """(kernel, args, meta) of each distinct launch (kernel, constexprs, dtype) of a forward
    and backward through the ops at the GPU block sizes: float32 and float64, both cull
    settings (a triangle to clip in one), shared and batched attributes and textures, every boundary mode, bilinear and
    mip-mapped (with uv's screen derivatives), render_textured's fused pass and antialias. Recorded once
    per process (~13 s of interpreted launches); each caller gets its own list."""
    return list(_recorded_launch_variants())


@functools.lru_cache(maxsize=1)
def _recorded_launch_variants() -> tuple:
    import torch

    import nl3dmm
    from nl3dmm.kernels import (antialias, derivatives, interpolate, rasterize, texture, texture_mip,
                                textured)

    launches: dict[tuple, tuple] = {}
    originals = {m: m.launch for m in (rasterize, interpolate, texture, derivatives, texture_mip, textured,
                                       antialias)}

    def record(real):
        def launch(kernel, grid, device, *args, **meta):
            dtypes = tuple(str(a.dtype) for a in args if isinstance(a, torch.Tensor))
            launches.setdefault((kernel.__name__, kernel, tuple(sorted(meta.items())), dtypes),
                                (kernel, args, meta))
            real(kernel, grid, device, *args, **meta)
        return launch

    gen = torch.Generator().manual_seed(0)
    try:
        for module, real in originals.items():
            module.launch = record(real)
        with gpu_block_sizes():
            for dtype in (torch.float32, torch.float64):
                for cull in (False, True):
                    pos = (torch.rand(2, 6, 4, generator=gen, dtype=dtype) * 2 - 1)
                    pos[..., 3] = 1
                    if not cull:  # a vertex behind the eye: the clipped-coverage kernel runs too
                        pos[1, 0, 3] = -0.5
                    pos.requires_grad_(True)
                    tri = torch.randint(0, 6, (4, 3), generator=gen, dtype=torch.int32)
                    rast = nl3dmm.rasterize(pos, tri, (4, 5), cull, backend="triton")
                    uv = nl3dmm.interpolate(torch.rand(6, 2, dtype=dtype), rast, tri, backend="triton")
                    uv = uv + nl3dmm.interpolate(torch.rand(2, 6, 2, dtype=dtype), rast, tri,
                                                 backend="triton")
                    loss = uv.sum()
                    uv_attr = torch.rand(6, 2, dtype=dtype, requires_grad=True)
                    uv_da = nl3dmm.interpolate_derivatives(uv_attr, rast, tri, pos.detach(), backend="triton")
                    uv_da = uv_da + nl3dmm.interpolate_derivatives(torch.rand(2, 6, 2, dtype=dtype), rast, tri,
                                                                   pos.detach(), backend="triton")
                    for boundary, tex_batch in (("clamp", 1), ("zero", 2), ("wrap", 1)):
                        tex = torch.rand(tex_batch, 3, 3, 2, dtype=dtype, requires_grad=True)
                        loss = loss + nl3dmm.sample_texture(tex, uv, boundary, backend="triton").sum()
                        loss = loss + nl3dmm.sample_texture(tex, uv, boundary, backend="triton",
                                                            uv_da=uv_da * 8).sum()
                    # render_textured's fused shading pass, every optional input present.
                    image, _, _ = nl3dmm.render_textured(
                        pos, tri, torch.rand(6, 2, dtype=dtype), torch.rand(1, 3, 3, 2, dtype=dtype, requires_grad=True),
                        (4, 5), cull, background=torch.rand(2, 4, 5, 2, dtype=dtype, requires_grad=True),
                        mask=torch.rand(2, 4, 5, dtype=dtype, requires_grad=True), backend="triton")
                    loss = loss + image.sum()
                    # antialias: its forward and both backward passes.
                    colour = torch.rand(2, 4, 5, 2, dtype=dtype, requires_grad=True)
                    loss = loss + nl3dmm.antialias(colour, rast, pos, tri, backend="triton").sum()
                    loss.backward()
    finally:
        for module, real in originals.items():
            module.launch = real
    return tuple(launches[key] for key in sorted(launches, key=lambda k: (k[0], str(k[2]), k[3])))


def compile_variants(variants: list[tuple], arch: int = 90) -> list:
    """runtime.compile_for_gpu of each (kernel, args, meta), in order, on a thread per core:
    Triton's compiler releases the GIL in its MLIR passes and in ptxas (2 cores: 46 s -> 24 s
    for the 41 variants)."""
    from nl3dmm.kernels import runtime

    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda v: runtime.compile_for_gpu(*v, arch=arch), variants))


def cuobjdump() -> str:
    import triton
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("cuobjdump")
    if found is None:
        raise FileNotFoundError("no cuobjdump (neither Triton's bundled one nor on PATH)")
    return found


def parse_res_usage(text: str) -> tuple[int, int, int]:
    """(registers, local bytes, shared bytes) of the last function of cuobjdump -res-usage.
    Triton kernels have no stack of their own: LOCAL is spill space."""
    match = re.findall(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if not match:
        raise ValueError(f"no resource line in cuobjdump output:\n{text[-2000:]}")
    regs, stack, shared, local = map(int, match[-1])
    return regs, stack + local, shared


def triton_kernel_resources(variants: list[tuple], arch: int = 90) -> list[KernelResources]:
    import triton

    from nl3dmm.kernels import runtime

    tool = cuobjdump()
    found = []
    for (kernel, args, meta), binary in zip(variants, compile_variants(variants, arch)):
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(binary.asm["cubin"])
            cubin.flush()
            usage = subprocess.run([tool, "-res-usage", cubin.name], capture_output=True,
                                   text=True, check=True).stdout
        regs, spill, shared = parse_res_usage(usage)
        dtype = next(str(a.dtype).replace("torch.", "") for a in args
                     if hasattr(a, "dtype") and a.dtype.is_floating_point)
        constexprs = ", ".join(f"{k}={v}" for k, v in sorted(meta.items()) if k in kernel.arg_names)
        name = f"{kernel.fn.__module__.rsplit('.', 1)[-1]}.{kernel.__name__} {dtype} {constexprs}"
        # cuobjdump reports a spill as STACK/LOCAL bytes, not stores and loads: count both.
        found.append(KernelResources(f"triton {triton.__version__}", name, regs, spill, spill,
                                     spill, shared))
    return found


# ---- the table ---------------------------------------------------------------------------

def markdown(rows: list[KernelResources], arch: int, commands: list[str]) -> str:
    lines = [f"# Kernel resources on sm_{arch} (static: ptxas, no GPU)", "",
             f"Generated {datetime.date.today()} by `python bench/gpu/static_checks.py`; "
             "tests/test_gpu_static.py fails on any spill.", ""]
    lines += [f"    {c}" for c in commands] + [""]
    lines += ["| source | kernel | registers | stack (B) | spill stores (B) | spill loads (B) | shared (B) |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.source} | `{r.kernel}` | {r.registers} | {r.stack} | "
                     f"{r.spill_stores} | {r.spill_loads} | {r.shared} |")
    spilling = [r.kernel for r in rows if r.spills]
    lines += ["", f"Kernels: {len(rows)}; spilling: {len(spilling)}"
              + (f" ({', '.join(spilling)})" if spilling else "") + "; most registers: "
              + (f"{max(r.registers for r in rows)}" if rows else "-") + "."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, 90 = H100/H200")
    parser.add_argument("--out", type=Path, help="markdown file to write (default: print)")
    parser.add_argument("--no-cuda", action="store_true", help="skip the nvcc part")
    parser.add_argument("--no-triton", action="store_true", help="skip the Triton part")
    args = parser.parse_args(argv)
    rows: list[KernelResources] = []
    commands = []
    if not args.no_cuda:
        rows += cuda_kernel_resources(args.arch)
        commands.append(cuda_command(args.arch))
    if not args.no_triton:
        import triton
        rows += triton_kernel_resources(gpu_launch_variants(), args.arch)
        commands.append(f"Triton {triton.__version__}: nl3dmm.kernels.runtime.compile_for_gpu(kernel, "
                        f"args, meta, arch={args.arch}) per launch variant, then cuobjdump -res-usage")
    text = markdown(rows, args.arch, commands)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out} ({len(rows)} kernels)")
    else:
        sys.stdout.write(text)
    return 1 if any(r.spills for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
