"""Is our spread under load ours or the scheduler's? (issue 15: "our own median/best spread <= 1.5x")

For each of our B = 1 cells of the peers comparison, two stand-ins that render nothing, each
calibrated idle to our call's best time: `torch.mm` of a square float32 matrix on torch's two
OpenMP threads (a static split, as any torch op), and a busy loop in Python on one thread.
All three interleaved (ours, mm, loop, ours, ...) with the peers protocol: an untimed 50 ms
pause before each call, 25 rounds after 2 warm-ups, optionally beside another process with two
busy threads (the comparison's `--load 2`). Prints median, best, spread (median / best) and
p90 (ms) of each. If the stand-ins spread as much as we do, the spread is the scheduler's
handling of a short call among busy threads, not something a renderer can remove.

    python bench/spread_floor.py load     # or: idle
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import compare  # noqa: E402
from pause_timing import times_after_pauses  # noqa: E402
from peer_nl3dmm import Ours  # noqa: E402
from peer_scene import PeerScene  # noqa: E402

CASES = ((224, "rasterize"), (224, "textured"), (224, "forward_backward"), (512, "textured"),
         (512, "forward_backward"))
ROUNDS, WARMUP, PAUSE = 25, 2, 0.05


def best_ms(fn, calls: int = 7, pause: float = PAUSE) -> float:
    """Best of `calls` calls, each after `pause` seconds (the protocol's: as in the rounds)."""
    return min(times_after_pauses(fn, calls, pause, warmup=0))


def matmul_of(target_ms: float):
    """torch.mm of an n x n float32 matrix by itself, n chosen (cube law, refined) so that
    back to back it takes about target_ms. (After a pause torch's sleeping OpenMP threads
    must be woken first: its best time after a pause would calibrate to the wake-up.)"""
    n = 256
    for _ in range(4):
        a = torch.rand(n, n)
        took = best_ms(lambda a=a: torch.mm(a, a), pause=0.0)
        n = max(16, int(n * (target_ms / took) ** (1 / 3)))
    a = torch.rand(n, n)
    return lambda: torch.mm(a, a), n


def loop_of(target_ms: float):
    """A Python busy loop of k iterations, k chosen so that it takes about target_ms."""
    def spin(k: int) -> None:
        for _ in range(k):
            pass
    k = 100_000
    for _ in range(4):
        took = best_ms(lambda k=k: spin(k), pause=0.0)
        k = max(1000, int(k * target_ms / took))
    return lambda: spin(k), k


def describe(times: list[float]) -> str:
    med, best = statistics.median(times), min(times)
    p90 = sorted(times)[int(0.9 * len(times)) - 1]
    return f"{med:7.2f} {best:7.2f} {med / best:5.2f} {p90:7.2f}"


def main() -> None:
    loaded = sys.argv[1:] == ["load"]
    print(f"{'load 2' if loaded else 'idle'}; torch threads {torch.get_num_threads()}; "
          "per cell: median best spread p90 (ms)")
    stand_ins = []
    for size, what in CASES:  # calibrated before the load starts
        ours = getattr(Ours(PeerScene(1, size)), what)
        for _ in range(WARMUP):
            ours()
        target = best_ms(ours)
        mm, n = matmul_of(target)
        loop, k = loop_of(target)
        stand_ins.append((size, what, ours, mm, n, loop, k, target))
    load = compare.start_load(2) if loaded else None
    try:
        time.sleep(1)  # let the load's threads start
        for size, what, ours, mm, n, loop, k, target in stand_ins:
            calls = (ours, mm, loop)
            for _ in range(WARMUP):
                for fn in calls:
                    fn()
            times: tuple[list[float], ...] = ([], [], [])
            for _ in range(ROUNDS):
                for fn, out in zip(calls, times):
                    time.sleep(PAUSE)
                    start = time.perf_counter()
                    fn()
                    out.append((time.perf_counter() - start) * 1e3)
            print(f"{what} B=1 {size}² (idle best {target:.2f} ms) | ours {describe(times[0])} | "
                  f"mm {n}² {describe(times[1])} | loop {describe(times[2])}", flush=True)
    finally:
        if load is not None:
            load.terminate()


if __name__ == "__main__":
    main()
