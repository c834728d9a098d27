"""The GPU benchmark table and per-kernel breakdown (run by bench/gpu/acceptance.py).

    python bench/gpu/gpu_bench.py --out DIR [--backends cuda,triton] [--batches 1,8,64,256]
                                  [--sizes 224,512] [--rounds 5] [--profile-batch 64]

The paper mesh (53,215 vertices, 105,840 triangles) posed at B yaws (bench/paper_scene.py Scene),
back faces culled, UVs interpolated, a 192 x 224 RGB texture per image, float32 on cuda:0.
Times are medians of CUDA-event timings after one warm-up (which also compiles Triton); the
forward is timed with the default validation on CUDA ("deferred", no host sync) and with
validate="full" (a sync per checked tensor), the forward + backward with one check_pending().
Writes DIR/bench.json, DIR/bench.md and DIR/profile-<backend>.md (torch.profiler, one
forward + backward at --profile-batch, 224 x 224: time per GPU kernel).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import nl3dmm


def _load_scene_class():
    """bench/paper_scene.py's Scene (the suites' scene), loaded by path: bench/ is not on
    sys.path when the tests import this module."""
    path = Path(__file__).resolve().parents[1] / "paper_scene.py"
    spec = importlib.util.spec_from_file_location("nl3dmm_bench_scenes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Scene


Scene = _load_scene_class()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def gpu_scene(batch: int, size: int) -> Scene:
    scene = Scene(batch, size=size)
    for name in ("pos", "tri", "uv", "tex"):
        setattr(scene, name, getattr(scene, name).cuda())
    return scene


def time_ms(fn, rounds: int) -> float:
    fn()  # warm-up: allocations, Triton compilation
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_one(backend: str, scene: Scene, rounds: int) -> dict:
    def forward():  # validate=None: "deferred" on CUDA tensors, no host sync
        scene.forward(backend)

    def forward_full():  # validate="full": a device-to-host sync per checked tensor
        size = (scene.size, scene.size)
        rast = nl3dmm.rasterize(scene.pos, scene.tri, size, True, backend=backend, validate="full")
        uv = nl3dmm.interpolate(scene.uv, rast, scene.tri, backend=backend, validate="full")
        nl3dmm.sample_texture(scene.tex, uv, backend=backend, validate="full")

    def forward_backward():
        pos, tex, _, _, image = scene.forward(backend, requires_grad=True)
        image.sum().backward()
        nl3dmm.render.check_pending()  # once per step, as training does

    return {"forward_ms": time_ms(forward, rounds),
            "forward_full_validation_ms": time_ms(forward_full, rounds),
            "forward_backward_ms": time_ms(forward_backward, rounds)}


def profile(backend: str, scene: Scene, top: int = 15) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    pos, tex, _, _, image = scene.forward(backend, requires_grad=True)  # warm-up
    image.sum().backward()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        pos, tex, _, _, image = scene.forward(backend, requires_grad=True)
        image.sum().backward()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None)
        if device_us is None:
            device_us = getattr(event, "cuda_time_total", 0)
        if device_us and getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA:
            rows.append((device_us, event.count, event.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows) or 1
    lines = [f"# Per-kernel GPU time, backend {backend}, B = {scene.batch}, "
             f"{scene.size} x {scene.size}, one forward + backward", "",
             "| kernel | calls | GPU time (ms) | share |", "|---|---|---|---|"]
    for device_us, count, key in rows[:top]:
        lines.append(f"| `{key[:90]}` | {count} | {device_us / 1000:.3f} | {device_us / total:.1%} |")
    lines.append(f"| all {len(rows)} kernels | | {total / 1000:.3f} | 100% |")
    return "\n".join(lines) + "\n"


def table(results: list[dict]) -> str:
    lines = ["| backend | B | size | forward (ms) | forward, validate=full (ms) | "
             "forward + backward (ms) | images/s (f + b) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['batch']} | {r['size']} | {r['error']} | | | |")
            continue
        rate = r["batch"] / r["forward_backward_ms"] * 1000
        lines.append(f"| {r['backend']} | {r['batch']} | {r['size']} | {r['forward_ms']:.3f} | "
                     f"{r['forward_full_validation_ms']:.3f} | {r['forward_backward_ms']:.3f} | "
                     f"{rate:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backends", default="cuda,triton")
    parser.add_argument("--batches", type=_ints, default=[1, 8, 64, 256])
    parser.add_argument("--sizes", type=_ints, default=[224, 512])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile-batch", type=int, default=64)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA device", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    backends = [b for b in args.backends.split(",") if b]
    status = nl3dmm.available_backends()
    results = []
    started = time.time()
    for size in args.sizes:
        for batch in args.batches:
            scene = gpu_scene(batch, size)
            for backend in backends:
                row = {"backend": backend, "batch": batch, "size": size}
                if status.get(backend) is not None:
                    row["error"] = f"unavailable: {status[backend]}"
                else:
                    try:
                        row.update(bench_one(backend, scene, args.rounds))
                    except (RuntimeError, ValueError) as exc:  # e.g. out of memory: record it
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
                        torch.cuda.empty_cache()
                results.append(row)
                print(json.dumps(row), flush=True)
                # Write as we go: the driver's timeout may stop us, and what ran is kept.
                (args.out / "bench.json").write_text(json.dumps(
                    {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                     "results": results}, indent=1))
                (args.out / "bench.md").write_text(table(results))
            del scene
            torch.cuda.empty_cache()
    for backend in backends:
        if status.get(backend) is None:
            (args.out / f"profile-{backend}.md").write_text(
                profile(backend, gpu_scene(args.profile_batch, 224)))
    print(f"gpu_bench: {len(results)} rows in {time.time() - started:.0f} s")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
