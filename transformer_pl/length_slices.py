"""A test metric by input length: the examples cut into buckets at quantiles of their word
counts, the metric computed on each bucket, written as DVC plot data
(`<metric>_by_length.json`) and a bar chart (`<metric>_by_length.png`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def length_buckets(word_counts: Sequence[int], buckets: int) -> list[tuple[str, np.ndarray]]:
    """(label, positions) per bucket, shortest first: edges at the count quantiles, so buckets
    hold about as many examples each (fewer buckets where counts repeat)."""
    counts = np.asarray(word_counts)
    if counts.size == 0:
        return []
    edges = np.unique(np.quantile(counts, np.linspace(0, 1, buckets + 1)[1:-1], method="lower"))
    bucket_of = np.searchsorted(edges, counts, side="left")
    slices = []
    for bucket in range(len(edges) + 1):
        positions = np.flatnonzero(bucket_of == bucket)
        if positions.size:
            low, high = counts[positions].min(), counts[positions].max()
            label = f"{low} words" if low == high else f"{low}–{high} words"
            slices.append((label, positions))
    return slices


def metric_by_length(
    texts: Sequence[str], score: Callable[[np.ndarray], float], metric: str, buckets: int
) -> list[dict[str, Any]]:
    """[{"words": label, metric: score(positions), "examples": n}] per length bucket of `texts`
    (words split on whitespace); `score` computes the metric on the examples at `positions`."""
    counts = [len(text.split()) for text in texts]
    return [
        {"words": label, metric: round(float(score(positions)), 6), "examples": int(positions.size)}
        for label, positions in length_buckets(counts, buckets)
    ]


def write_metric_by_length(rows: list[dict[str, Any]], metric: str, plots_dir: Path) -> list[Path]:
    """The rows as `<metric>_by_length.json` and a bar chart `<metric>_by_length.png`."""
    from matplotlib.figure import Figure  # a bare Figure renders through Agg: no display

    plots_dir.mkdir(parents=True, exist_ok=True)
    data = plots_dir / f"{metric}_by_length.json"
    data.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    figure = Figure(figsize=(6, 1.2 + 0.5 * len(rows)))
    axes = figure.subplots()
    labels = [f"{row['words']} ({row['examples']})" for row in rows]
    axes.barh(labels, [row[metric] for row in rows])
    axes.invert_yaxis()  # shortest on top
    axes.set(xlabel=f"test {metric}", title=f"test {metric} by input length (examples)")
    figure.tight_layout()
    image = plots_dir / f"{metric}_by_length.png"
    figure.savefig(image)
    return [data, image]
