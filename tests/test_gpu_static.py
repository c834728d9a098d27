"""Static GPU checks without a GPU (issue 13 item 5): no CUDA or Triton kernel spills
registers on sm_90, and the Triton kernels compile at the block sizes the GPU path launches.

The resource table itself is bench/results/ptxas-sm90.md, written by
`python bench/gpu/static_checks.py --out bench/results/ptxas-sm90.md`. The Triton spill check
compiles ~40 kernel variants (a minute or more on 2 cores): it is marked slow; the default
suite compiles one variant per kernel and constexpr set (test_triton.py) and checks the
coverage kernel, the one that used to spill.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "gpu"))

import static_checks  # noqa: E402

SAMPLE = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z6kernelPf' for 'sm_90'
ptxas info    : Function properties for _Z6kernelPf
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 1024 bytes smem, 360 bytes cmem[0]
ptxas info    : Compiling entry function '_Z5otherv' for 'sm_90'
ptxas info    : Function properties for _Z5otherv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 352 bytes cmem[0]
"""


def test_ptxas_report_is_parsed():
    first, second = static_checks.parse_ptxas(SAMPLE)
    assert (first.kernel, first.registers, first.stack, first.spill_stores, first.spill_loads,
            first.shared) == ("_Z6kernelPf", 255, 8, 4, 4, 1024)
    assert first.spills and not second.spills and second.registers == 12
    regs, local, shared = static_checks.parse_res_usage(
        "Function _kernel:\n  REG:255 STACK:8 SHARED:1024 LOCAL:0 CONSTANT[0]:584 TEXTURE:0")
    assert (regs, local, shared) == (255, 8, 1024)
    with pytest.raises(ValueError):
        static_checks.parse_res_usage("nothing")


def test_cuda_kernels_do_not_spill():
    """Every __global__ of csrc/ compiled for sm_90 with -Xptxas -v: no spill stores or loads."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH: the CUDA sources cannot be compiled here")
    kernels = static_checks.cuda_kernel_resources(arch=90)
    declared = {name for source in REPO.joinpath("csrc").rglob("*.cu")
                for name in re.findall(r"__global__\s+void\s+(\w+)", source.read_text())}
    reported = " ".join(k.kernel for k in kernels)
    missing = [name for name in declared if name not in reported]
    assert declared and not missing, f"ptxas reported no entry for {missing}"
    spilling = [f"{k.kernel}: {k.spill_stores} B stores, {k.spill_loads} B loads"
                for k in kernels if k.spills]
    assert not spilling, "CUDA kernels spill registers:\n" + "\n".join(spilling)


def _triton():
    try:
        import triton
    except ImportError:
        pytest.skip("triton is not installed")
    from triton.runtime.jit import JITFunction

    from nl3dmm.kernels import rasterize
    if not isinstance(rasterize._coverage_kernel, JITFunction):
        pytest.skip("TRITON_INTERPRET=1 is set: every kernel is an interpreted one")
    return triton


def test_triton_coverage_kernel_fits_128_registers_without_spills():
    """The coverage kernel at its GPU tile used 255 registers with spills (12.5 % occupancy)
    before one triangle per thread and 32-bit box arithmetic (kernels/runtime.py)."""
    _triton()
    from nl3dmm.kernels import rasterize

    variants = [v for v in static_checks.gpu_launch_variants() if v[0] is rasterize._coverage_kernel]
    assert variants, "the ops launched no coverage kernel"
    worst = max(static_checks.triton_kernel_resources(variants[-1:]), key=lambda k: k.registers)
    assert not worst.spills, f"{worst.kernel} spills {worst.stack} bytes"
    assert worst.registers <= 128, f"{worst.kernel} uses {worst.registers} registers"


@pytest.mark.slow
def test_no_triton_kernel_spills():
    """Every Triton launch variant of the GPU path (both dtypes, all constexprs). The
    clipped-coverage kernel used to spill 2.6 KB (255 registers: a clipped polygon per thread);
    it now clips one triangle at a time across the program (kernels/rasterize.py). antialias's
    kernels were missing from the variants until they spilled: 120 B in the last backward pass
    at two pixels per thread once clipped edges' visible parts were blended (now one)."""
    _triton()
    from nl3dmm.kernels import rasterize

    variants = static_checks.gpu_launch_variants()
    assert any(v[0] is rasterize._clipped_coverage_kernel for v in variants), \
        "the ops launched no clipped-coverage kernel"
    kernels = static_checks.triton_kernel_resources(variants)
    assert len({k.kernel.split()[0] for k in kernels}) == 16, "expected all sixteen kernels"
    spilling = [f"{k.kernel}: {k.stack} B, {k.registers} registers" for k in kernels if k.spills]
    assert not spilling, "Triton kernels spill registers:\n" + "\n".join(spilling)
