"""Our CPU renderer against each peer, interleaved in one process (issue 15's protocol).

    python bench/peers/compare.py               # idle machine
    python bench/peers/compare.py --load 2      # with a competing 2-thread busy loop

For every case (op x batch x image size) and every installed peer: first the checks of
peer_checks.py (triangle ids, then the image or the gradients; a peer that fails them is not
timed), then `--warmup` calls of each side, then `--pairs` times: pause, ours (A), pause, the
peer (B), each call timed alone with perf_counter and the pauses untimed. Reported per case:
median and best of each side, the ratios peer / ours (> 1: we are faster) and each side's
spread (median / best). `--load N` starts another process running N threads of a busy loop
(sha256 over 1 MiB, which releases the GIL, so N threads hold N cores) for the whole run and
records how many cores it actually got. Writes bench/results/peers-<date>-<idle|load>.json
and .md (the date is UTC).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

import nl3dmm
from peer_checks import Outputs, agreement
from peer_registry import BY_NAME, OPS, OURS, PEERS, SIZES, run_op, supports
from peer_scene import Peer, PeerScene

RESULTS = Path(__file__).resolve().parents[1] / "results"

_BUSY_LOOP = """
import hashlib, sys, threading
block = bytes(1 << 20)
def spin():
    while True:
        hashlib.sha256(block).digest()
for _ in range(int(sys.argv[1])):
    threading.Thread(target=spin, daemon=True).start()
threading.Event().wait()
"""


def start_load(threads: int) -> subprocess.Popen:
    """Another process with `threads` busy threads; the caller terminates it."""
    return subprocess.Popen([sys.executable, "-c", _BUSY_LOOP, str(threads)])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def interleave(ours: Callable[[], object], peer: Callable[[], object], pairs: int, warmup: int,
               pause: float) -> tuple[list[float], list[float]]:
    """Milliseconds of `pairs` calls of each, A B A B ..., after `warmup` calls of each; an
    untimed `pause` before every call, so neither side runs in the other's wake."""
    for _ in range(warmup):
        ours()
        peer()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(pairs):
        for fn, out in ((ours, times[0]), (peer, times[1])):
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
    return times


def summary(ours_ms: list[float], peer_ms: list[float]) -> dict:
    om, ob = statistics.median(ours_ms), min(ours_ms)
    pm, pb = statistics.median(peer_ms), min(peer_ms)
    return {"ours_median_ms": om, "ours_best_ms": ob, "peer_median_ms": pm, "peer_best_ms": pb,
            "ratio_median": pm / om, "ratio_best": pb / ob,
            "ours_spread": om / ob, "peer_spread": pm / pb}


def time_case(ours: Peer, peer: Peer, op: str, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    run_op(peer, op)
    once = time.perf_counter() - start
    if once > args.max_call_seconds:
        return {"skipped": f"one call took {once:.1f} s (> --max-call-seconds {args.max_call_seconds})"}
    ours_ms, peer_ms = interleave(lambda: run_op(ours, op), lambda: run_op(peer, op),
                                  args.pairs, args.warmup, args.pause)
    return {**summary(ours_ms, peer_ms), "ours_ms": ours_ms, "peer_ms": peer_ms}


def versions(peers: list[type[Peer]], missing: dict[str, str]) -> dict:
    found = {"python": platform.python_version(), "torch": torch.__version__,
             "nl3dmm": nl3dmm.__version__}
    found.update({p.name: p.version() for p in peers if p.name not in missing and p.version()})
    return found


def machine() -> dict:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "kernel_threads": nl3dmm.render.num_threads()}


def case_label(op: str, batch: int, size: int) -> str:
    return f"{op.replace('_', '+')} B={batch} {size}²"


def markdown(report: dict) -> str:
    peers = [p for p in report["peers"] if p in {c["peer"] for c in report["cases"]}]
    lines = [f"# Our CPU renderer vs peers, {report['date']} UTC, {report['condition']}", "",
             f"    {report['command']}", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['logical_cpus']} logical "
             f"CPUs; our kernels on {report['machine']['kernel_threads']} threads.",
             f"Load: `uptime` before: {report['uptime_before']}; after: {report['uptime_after']}."]
    if report["load_threads"]:
        lines.append(f"Competing load: {report['load_threads']} busy thread(s) in another process, "
                     f"which got {report['load_cores']:.2f} cores on average over the run.")
    lines += ["Versions: " + "; ".join(f"{k}: {v}" for k, v in report["versions"].items()) + ".",
              "", f"Median time of the peer / ours (> 1: we are faster); in brackets the ratio "
              f"of best times. {report['pairs']} interleaved pairs per cell after "
              f"{report['warmup']} warm-up calls of each, {report['pause_s'] * 1e3:.0f} ms untimed "
              f"pause before each call.", "",
              "| case | " + " | ".join(report["titles"][p] for p in peers) + " |",
              "|---|" + "---|" * len(peers)]
    cells: dict[tuple[str, str], dict] = {(c["case"], c["peer"]): c for c in report["cases"]}
    for case in dict.fromkeys(c["case"] for c in report["cases"]):
        row = []
        for p in peers:
            c = cells.get((case, p))
            if c is None:
                row.append("–")
            elif "ratio_median" in c:
                row.append(f"{c['ratio_median']:.3g} ({c['ratio_best']:.3g})")
            elif c["skipped"].startswith("checks failed"):
                row.append(f"not timed: ids {c['agreement']['ids']:.1%}")
            else:
                row.append("not timed: too slow")
        lines.append(f"| {case} | " + " | ".join(row) + " |")
    lines += ["", "| case | peer | ids agree | ours median / best (ms) | peer median / best (ms) "
              "| ours spread | peer spread |", "|---|---|---|---|---|---|---|"]
    for c in report["cases"]:
        agree = f"{c['agreement']['ids']:.2%}" if "agreement" in c else "–"
        if "ratio_median" in c:
            lines.append(f"| {c['case']} | {c['peer']} | {agree} | {c['ours_median_ms']:.2f} / "
                         f"{c['ours_best_ms']:.2f} | {c['peer_median_ms']:.2f} / {c['peer_best_ms']:.2f} "
                         f"| {c['ours_spread']:.2f} | {c['peer_spread']:.2f} |")
        else:
            lines.append(f"| {c['case']} | {c['peer']} | {agree} | not timed: {c['skipped']} | | | |")
    return "\n".join(lines) + "\n"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'1x224,8x224' -> [(1, 224), (8, 224)]."""
    try:
        return [(int(b), int(s)) for b, s in (item.split("x") for item in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BATCHxSIZE[,BATCHxSIZE...], got {text!r}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="run with N competing busy threads in another process")
    parser.add_argument("--peers", default=",".join(p.name for p in PEERS),
                        help="comma-separated, from: " + ", ".join(p.name for p in PEERS))
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated, from: " + ", ".join(OPS))
    parser.add_argument("--sizes", type=parse_sizes, default=SIZES,
                        help="BATCHxSIZE list (default: " + ",".join(f"{b}x{s}" for b, s in SIZES) + ")")
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds before each call")
    parser.add_argument("--max-call-seconds", type=float, default=15.0,
                        help="a peer whose first call takes longer is not timed")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names, ops = args.peers.split(","), args.ops.split(",")
    unknown = [n for n in names if n not in BY_NAME or n == OURS.name] + [o for o in ops if o not in OPS]
    if unknown:
        parser.error(f"unknown peers or ops: {', '.join(unknown)}")
    if args.load < 0 or args.pairs < 1 or args.warmup < 0 or args.pause < 0:
        parser.error("--load, --warmup and --pause must be >= 0 and --pairs >= 1")

    peers = [BY_NAME[n] for n in names]
    report = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
              "command": "python bench/peers/compare.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "condition": f"load {args.load}" if args.load else "idle",
              "load_threads": args.load, "pairs": args.pairs, "warmup": args.warmup,
              "pause_s": args.pause, "machine": machine(),
              "peers": [p.name for p in peers], "titles": {p.name: p.title for p in peers},
              "missing": {p.name: why for p in peers if (why := p.missing()) is not None},
              "cases": []}
    report["versions"] = versions(peers, report["missing"])
    for name, why in report["missing"].items():
        print(f"skipping {name}: {why}. Install: {BY_NAME[name].install}", flush=True)
    load = start_load(args.load) if args.load else None
    try:
        if load is not None:
            time.sleep(1.0)  # let the load's threads start
            load_start = (time.monotonic(), cpu_seconds(load.pid))
        report["uptime_before"] = uptime()
        for batch, size in args.sizes:
            scene = PeerScene(batch, size)
            ours = Outputs(OURS(scene))
            for peer_class in peers:
                if peer_class.name in report["missing"]:
                    continue
                peer = Outputs(peer_class(scene))
                for op in ops:
                    if not supports(peer_class, op):
                        continue
                    found = agreement(peer, ours, op)
                    cell = {"case": case_label(op, batch, size), "op": op, "batch": batch,
                            "size": size, "peer": peer_class.name, "agreement": vars(found)}
                    if found.failures():
                        cell["skipped"] = "checks failed: " + "; ".join(found.failures())
                    else:
                        cell.update(time_case(ours.peer, peer.peer, op, args))
                    report["cases"].append(cell)
                    shown = (f"{cell['ratio_median']:.3g} ({cell['ratio_best']:.3g}), ours "
                             f"{cell['ours_median_ms']:.2f} ms" if "ratio_median" in cell
                             else cell["skipped"])
                    print(f"{cell['case']:<28} {peer_class.name:<10} {shown}", flush=True)
        report["uptime_after"] = uptime()
        if load is not None:
            elapsed = time.monotonic() - load_start[0]
            report["load_cores"] = (cpu_seconds(load.pid) - load_start[1]) / elapsed
    finally:
        if load is not None:
            load.terminate()
            load.wait()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"peers-{report['date'][:10]}-{'load' if args.load else 'idle'}"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out_dir / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {args.out_dir / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
