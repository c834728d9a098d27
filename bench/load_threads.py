"""Does using fewer threads under load make our times steadier? Our CPU ops at 1 and at 2
threads, interleaved (A, B, A, B; 25 pairs after 2 warm-up pairs, an untimed 50 ms pause before
each call), with or without a competing process of 2 busy threads (the peers comparison's
`--load 2`). Prints median, best, p90 and spread (median / best) per thread count.

    python bench/load_threads.py load     # or: idle

Result (bench/results/overlap-2026-12-02.md): under load one thread is slower at the median in
every case and its spread is not reliably smaller, so the pool keeps using every thread.
"""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import compare  # noqa: E402
import nl3dmm  # noqa: E402
from peer_nl3dmm import Ours  # noqa: E402
from peer_scene import PeerScene  # noqa: E402

CASES = ((1, 224, "rasterize"), (1, 224, "textured"), (1, 224, "forward_backward"), (1, 512, "textured"),
         (1, 512, "forward_backward"))
PAIRS, WARMUP, PAUSE = 25, 2, 0.05

load = compare.start_load(2) if sys.argv[1:] == ["load"] else None
before = nl3dmm.render.num_threads()
try:
    time.sleep(1)  # let the load's threads start
    for batch, size, what in CASES:
        call = getattr(Ours(PeerScene(batch, size)), what)

        def at(threads: int, call=call):
            # Setting the count (one OpenMP call) is inside the timed call; microseconds.
            return lambda: (nl3dmm.render.set_num_threads(threads), call())

        one, two = compare.interleave(at(1), at(2), PAIRS, WARMUP, PAUSE)
        times = {1: one, 2: two}
        print(f"{what} B={batch} {size}²: " + " | ".join(
            f"{t} thread(s): median {statistics.median(v):.2f} best {min(v):.2f} "
            f"p90 {sorted(v)[int(0.9 * len(v))]:.2f} spread {statistics.median(v) / min(v):.2f}"
            for t, v in times.items()), flush=True)
finally:
    nl3dmm.render.set_num_threads(before)
    if load is not None:
        load.terminate()
