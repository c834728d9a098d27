"""Launching the kernels: compiled on CUDA tensors, interpreted on CPU tensors.

One process can hold both kinds of tensor, so the mode is picked per launch from the tensors'
device rather than with TRITON_INTERPRET=1 (that variable is read when triton is imported and
then turns every @triton.jit function of the process into an interpreted one, CUDA included).

Triton's interpreter can run a kernel given at run time (`InterpretedFunction(fn)`), but an
interpreted kernel cannot call a compiled @triton.jit helper ("Cannot call @triton.jit'd
outside of the scope of a kernel"). `interpreted()` therefore rebuilds the kernel on a copy of
its module globals in which every @triton.jit helper is itself interpreted, recursively. The
helpers of triton.language that are themselves @triton.jit functions (tl.sum, tl.max, tl.zeros,
tl.cdiv, ...) cannot be rebuilt that way, so the kernels use only builtins (tl.full, tl.where,
tl.maximum, tl.reduce with triton.language.standard's combine functions, which the
interpreter runs as one numpy reduction where a combine function of ours runs element by
element, ...). Triton 3.6's interpreter (numpy 2.4) also cannot use a tensor as a range()
bound, so data-dependent loops are while loops and the channel counts are constexpr. With TRITON_INTERPRET=1 set anyway, every kernel already is an
InterpretedFunction and runs as is. Written for, and tested with, Triton 3.6 and 3.9.

The interpreter costs milliseconds per program whatever the block size (it runs one numpy
operation per Triton operation), so CPU launches use large blocks and few programs.
"""
from __future__ import annotations

import types
from typing import Any

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

_INTERPRETED: dict[int, InterpretedFunction] = {}


def interpreted(kernel: Any) -> Any:
    """The interpreter version of a @triton.jit function, its helpers interpreted too."""
    if not isinstance(kernel, JITFunction):  # already interpreted (TRITON_INTERPRET=1)
        return kernel
    key = id(kernel)
    if key not in _INTERPRETED:
        fn = kernel.fn
        scope = dict(fn.__globals__)  # a copy: the interpreter also writes its names into it
        clone = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
        _INTERPRETED[key] = InterpretedFunction(clone)  # registered first: helpers may recurse
        for name, value in fn.__globals__.items():
            if isinstance(value, JITFunction):
                scope[name] = interpreted(value)
    return _INTERPRETED[key]


def launch(kernel: Any, grid: tuple[int, ...], device: torch.device, *args: Any, **meta: Any) -> None:
    """kernel[grid](*args, **meta), compiled for CUDA tensors and interpreted for CPU ones.

    `meta` holds the constexpr arguments and compile options; the interpreter ignores the
    options (such as enable_fp_fusion) that are not kernel parameters.
    """
    meta = _with_default_options(meta)
    if device.type == "cuda":
        with torch.cuda.device(device):
            kernel[grid](*args, **meta)
    elif device.type == "cpu":
        interpreted(kernel)[grid](*args, **meta)
    else:
        raise ValueError(f"the Triton backend runs on CUDA tensors or (interpreted) CPU tensors, not {device}")


def _with_default_options(meta: dict) -> dict:
    """Fused multiply-adds stay on unless a launch turns them off, stated explicitly because
    Triton's default changes in 3.10 (and 3.9 warns that it will)."""
    return {"enable_fp_fusion": True, **meta}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


GPU_WARPS = 4  # Triton's default num_warps, which every launch uses: 128 threads a program


def pixel_block(device: torch.device, pixels: int, per_thread: int = 2) -> int:
    """Pixels per program of the per-pixel kernels: on the GPU `per_thread` pixels for each of
    the program's threads (2, 256 pixels; 1 for a kernel whose state per pixel would spill
    registers at 2). On the CPU, whole small images per program (up to 4096 pixels): the
    interpreter's cost is per program, not per pixel."""
    if device.type == "cuda":
        return GPU_WARPS * 32 * per_thread
    return min(4096, triton.next_power_of_2(pixels))


def triangle_tile(device: torch.device, num_triangles: int) -> tuple[int, int]:
    """(triangles, pixels) per step of the per-triangle coverage kernel: each program takes a
    block of triangles and walks their bounding boxes a block of pixels at a time.

    On the GPU: one triangle per thread and one pixel per step, (128, 1). The kernel keeps
    ~20 values per triangle (snapped corners, depths, edge ownership, box), most of them
    64-bit; a (64, 8) tile spreads each triangle over 8 lanes and hands every thread 4
    triangles' worth of them, which took 241-255 registers with spills (12.5 % occupancy).
    With one triangle per thread it takes 68-70 (67-70 on Triton 3.6), no spills (sm_90;
    bench/results/ptxas-sm90*.md). Face-mesh triangles cover about a pixel at 224 x 224, so walking one pixel
    per step wastes few steps. The CPU interpreter prefers everything in one program."""
    if device.type == "cuda":
        return GPU_WARPS * 32, 1
    return min(64, triton.next_power_of_2(num_triangles)), 64



def clip_triangle_tile(device: torch.device, num_triangles: int) -> tuple[int, int]:
    """(triangles, pixels) of the clipped-triangle coverage kernel: it tests triangle_tile's
    block of triangles, one per lane, and clips and covers the few that need it one at a time,
    walking their fans (a sub-triangle can span the image) PIXELS pixels a step: 128 on the
    GPU (the program's threads), 1024 in the interpreter, which pays per operation."""
    tris, _ = triangle_tile(device, num_triangles)
    return tris, (GPU_WARPS * 32 if device.type == "cuda" else 1024)


_POINTER_TYPES = {torch.float32: "*fp32", torch.float64: "*fp64", torch.int32: "*i32",
                  torch.int64: "*i64"}


def compile_for_gpu(kernel: Any, args: tuple, meta: dict, arch: int = 90) -> Any:
    """Compile one launch's kernel ahead of time for an NVIDIA GPU of compute capability
    `arch`, with no GPU present (Triton ships ptxas): the check that the compiled path, which
    the CPU interpreter never exercises, still builds. args and meta are those of `launch`
    (tensors on any device; ints are taken as int32, as Triton does below 2^31)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs = {}, {}
    for name, value in zip(kernel.arg_names, args):
        if isinstance(value, torch.Tensor):
            signature[name] = _POINTER_TYPES[value.dtype]
        elif isinstance(value, int) and -2**31 <= value < 2**31:
            signature[name] = "i32"
        else:
            raise TypeError(f"no Triton type for argument {name}={value!r}")
    options = {}
    for name, value in _with_default_options(meta).items():
        if name in kernel.arg_names:
            signature[name] = "constexpr"
            constexprs[name] = value
        else:
            options[name] = value
    source = ASTSource(kernel, signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
