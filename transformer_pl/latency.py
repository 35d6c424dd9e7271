"""Wall-clock latency of a prediction function, one example per call."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def measure_latency(
    predict_fn: Callable[[Any], Any], examples: Sequence[Any], repeats: int = 3
) -> dict[str, float]:
    """Wall-clock latency of `predict_fn(example)`, one example per call (batch size 1).

    One untimed warm-up call first (lazy initialisation, caches); then every example is timed
    `repeats` times. Keys: `latency_mean_ms`, `latency_p50_ms`, `latency_p95_ms`, `latency_calls`.
    """
    if not examples or repeats < 1:
        raise ValueError("measure_latency needs at least one example and repeats >= 1")
    predict_fn(examples[0])
    timings_ms = []
    for _ in range(repeats):
        for example in examples:
            start = time.perf_counter()
            predict_fn(example)
            timings_ms.append((time.perf_counter() - start) * 1000.0)
    timings = np.asarray(timings_ms)
    return {
        "latency_mean_ms": float(timings.mean()),
        "latency_p50_ms": float(np.percentile(timings, 50)),
        "latency_p95_ms": float(np.percentile(timings, 95)),
        "latency_calls": float(len(timings)),
    }
