"""One forward + backward on a non-default CUDA stream, and one on cuda:1 if it exists, each
compared bit for bit with the same call on cuda:0's default stream (run by acceptance.py).

    NL3DMM_CUDA_UNVERIFIED=1 python bench/gpu/streams_case.py [--backends cuda,triton]

Exit 0 when every comparison holds (printing one line each), 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys

import torch

import nl3dmm


def chain(device: torch.device, backend: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(2, 40, 4, generator=gen) * 2 - 1
    pos[..., 3] = 1
    tri = torch.randint(0, 40, (60, 3), generator=gen, dtype=torch.int32)
    attr = torch.rand(40, 2, generator=gen)
    tex = torch.rand(2, 16, 16, 3, generator=gen)
    pos, tri, attr, tex = (t.to(device) for t in (pos, tri, attr, tex))
    pos.requires_grad_(True)
    tex.requires_grad_(True)
    rast = nl3dmm.rasterize(pos, tri, (48, 64), backend=backend)
    uv = nl3dmm.interpolate(attr, rast, tri, backend=backend)
    image = nl3dmm.sample_texture(tex, uv, backend=backend)
    image.sum().backward()
    nl3dmm.render.check_pending(device)
    # Only deterministic outputs are compared bit for bit; gradients to tolerance below.
    return [rast.detach().cpu(), image.detach().cpu(), pos.grad.cpu(), tex.grad.cpu()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    exact = torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    return exact and all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a[2:], b[2:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="cuda,triton")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("streams_case: no CUDA device", file=sys.stderr)
        return 2
    ok = True
    for backend in args.backends.split(","):
        if nl3dmm.available_backends().get(backend) is not None:
            print(f"{backend}: unavailable ({nl3dmm.available_backends()[backend]})")
            ok = False
            continue
        base = chain(torch.device("cuda:0"), backend)
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            on_stream = chain(torch.device("cuda:0"), backend)
        side.synchronize()
        print(f"{backend} non-default stream: {'same' if same(base, on_stream) else 'DIFFERENT'}")
        ok &= same(base, on_stream)
        if torch.cuda.device_count() > 1:
            other = chain(torch.device("cuda:1"), backend)
            print(f"{backend} cuda:1: {'same' if same(base, other) else 'DIFFERENT'}")
            ok &= same(base, other)
        else:
            print(f"{backend} cuda:1: not present (1 device)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
