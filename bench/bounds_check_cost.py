"""What the in-kernel index checks (issue 12 item 3) cost on the CPU backend: each kernel of
the paper-mesh scene (B images at 224 x 224, float32) called directly through the backend, so
that Python-side validation is not in the timing. Run it on the commit before the checks and
on the one after, on the same machine, alternating, and compare.

The kernels run on one OpenMP thread and the time is the calling thread's CPU time
(time.thread_time), minimum and median over the rounds: on a shared machine wall-clock times
moved by 5x between identical runs, CPU time of one thread much less.

    python bench/bounds_check_cost.py --label after --out bench/results/bounds-check-cost.json

Appends one record per run to the JSON file (a list), with the label, commit and load average.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import torch

from nl3dmm.render import set_num_threads
from nl3dmm.render.backends import get_backend

from paper_scene import Scene


def _cpu_ms(fn, rounds: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        fn()
        times.append((time.thread_time() - start) * 1e3)
    return {"min": round(min(times), 3), "median": round(statistics.median(times), 3)}


def measure(batch: int, rounds: int) -> dict[str, dict[str, float]]:
    set_num_threads(1)
    scene = Scene(batch)
    cpu = get_backend("cpu")
    tri = scene.tri.int().contiguous()
    uv_attr = scene.uv.unsqueeze(0).contiguous()
    rast = cpu.rasterize(scene.pos, tri, 224, 224, True)
    uv = cpu.interpolate(uv_attr, False, rast, tri)
    grad_rast = torch.randn_like(rast)
    grad_uv = torch.randn_like(uv)
    grad_image = torch.randn(batch, 224, 224, 3)
    return {
        "rasterize": _cpu_ms(lambda: cpu.rasterize(scene.pos, tri, 224, 224, True), rounds),
        "rasterize_backward": _cpu_ms(lambda: cpu.rasterize_backward(scene.pos, tri, rast, grad_rast), rounds),
        "interpolate": _cpu_ms(lambda: cpu.interpolate(uv_attr, False, rast, tri), rounds),
        "interpolate_backward": _cpu_ms(lambda: cpu.interpolate_backward(uv_attr, False, rast, tri, grad_uv), rounds),
        "sample_texture": _cpu_ms(lambda: cpu.sample_texture(scene.tex, True, uv, "clamp"), rounds),
        "sample_texture_backward": _cpu_ms(
            lambda: cpu.sample_texture_backward(scene.tex, True, uv, "clamp", grad_image), rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--build", default=None,
                        help="what nl3dmm is imported from, when not this checkout (e.g. a PYTHONPATH build of another commit)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {"label": args.label, "commit": commit, "build": args.build or "this checkout", "batch": args.batch, "rounds": args.rounds,
              "load_average": round(os.getloadavg()[0], 1), "kernel_threads": 1,
              "thread_cpu_ms": measure(args.batch, args.rounds)}
    runs = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps(runs + [record], indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
