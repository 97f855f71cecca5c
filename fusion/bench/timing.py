"""Timing a call many times: what every benchmark reports (medians; this machine is shared and noisy)."""
from __future__ import annotations

import statistics
import time


def timed(fn, repeat: int) -> dict:
    """Milliseconds per call of fn over `repeat` calls: median, 95th percentile, max."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
            "max_ms": round(times[-1], 2)}
