"""The timing loop of issue 15's variance scripts (wake_latency.py, raster_pause_times.py,
antialias_times.py): untimed warm-up calls, then each timed call after an untimed pause (the
peers protocol's 50 ms; 0 for back to back)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def times_after_pauses(fn: Callable[[], object], calls: int, pause: float, warmup: int = 3) -> list[float]:
    """Milliseconds of each of `calls` calls of fn, each after sleeping `pause` seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        time.sleep(pause)
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def describe(times: list[float]) -> str:
    """'median M best B spread M/B p90 P' in ms."""
    med, best = statistics.median(times), min(times)
    return f"median {med:.2f} best {best:.2f} spread {med / best:.2f} p90 {sorted(times)[int(0.9 * len(times)) - 1]:.2f}"
