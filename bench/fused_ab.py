"""render_textured fused vs unfused (the chain of separate ops), interleaved A/B in one process
on the paper scene (bench/test_bench_fused.py's FusedScene: 224 x 224, background and mask),
CPU backend, forward and forward + backward, B = 1 and 8. Writes JSON and a markdown table.

    python bench/fused_ab.py [--pairs 20] [--out bench/results/fused-<date>]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bench_fused import fused_scene  # noqa: E402

import nl3dmm  # noqa: E402


def load() -> str:
    return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def interleave(a, b, pairs: int, warmup: int) -> tuple[list[float], list[float]]:
    """Milliseconds of `pairs` calls of each, A B A B ..., after `warmup` calls of each."""
    for _ in range(warmup):
        a()
        b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(pairs):
        for fn, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", default=None, help="path stem for .json and .md")
    args = parser.parse_args(argv)
    rows = []
    before = load()
    for batch in args.batches:
        scene = fused_scene(batch)
        for op in ("forward", "forward_backward"):
            if op == "forward":
                def run(fused):
                    with torch.no_grad():
                        scene.render(fused)
            else:
                def run(fused):
                    scene.forward_backward(fused)
            fused_ms, unfused_ms = interleave(lambda: run(True), lambda: run(False), args.pairs, args.warmup)
            row = {"op": op, "B": batch, "fused_median_ms": statistics.median(fused_ms),
                   "fused_best_ms": min(fused_ms), "unfused_median_ms": statistics.median(unfused_ms),
                   "unfused_best_ms": min(unfused_ms), "load": load()}
            row["speedup_median"] = row["unfused_median_ms"] / row["fused_median_ms"]
            row["speedup_best"] = row["unfused_best_ms"] / row["fused_best_ms"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {"command": "python bench/fused_ab.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "load_before": before, "load_after": load(), "pairs": args.pairs, "warmup": args.warmup,
              "torch": torch.__version__, "kernel_threads": nl3dmm.render.num_threads(),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
              "rows": rows}
    lines = [f"# render_textured fused vs unfused, CPU backend ({report['date']})", "",
             f"`{report['command']}`; {report['pairs']} interleaved pairs per cell after "
             f"{report['warmup']} warm-up pairs; {report['machine']}, {report['kernel_threads']} kernel threads, "
             f"torch {report['torch']}.", f"Load before: {before}; after: {report['load_after']}.", "",
             "| op | B | fused median (ms) | unfused median (ms) | unfused / fused (median) | "
             "fused best | unfused best | unfused / fused (best) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['B']} | {r['fused_median_ms']:.2f} | {r['unfused_median_ms']:.2f} | "
                     f"{r['speedup_median']:.2f}x | {r['fused_best_ms']:.2f} | {r['unfused_best_ms']:.2f} | "
                     f"{r['speedup_best']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(report, indent=1) + "\n")
        Path(args.out + ".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
