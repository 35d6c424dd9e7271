"""How evaluate scores a summarizer: ROUGE-1/2/L (F-measure, stemmed) of the val and test
summaries beside the SAMSum paper's extractive baselines, Longest-3 (`baseline_*`) and Lead-3
(`lead3_*`), with the paired interval of each ROUGE-1 and ROUGE-L difference from them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.protocol import SCORED_SPLITS, Evaluation

# Where each baseline's figures go: `<prefix>_<split>_<rouge>`.
BASELINES = {"baseline": "longest", "lead3": "lead"}


def evaluate_summarizer(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """The summaries of the val and test sources (the decode settings), scored with ROUGE
    beside Longest-3 and Lead-3."""
    import pandas as pd

    from transformer_pl.latency import measure_latency
    from transformer_pl.length_slices import metric_by_length, write_metric_by_length
    from transformer_pl.significance import paired_bootstrap
    from transformer_pl.tasks.summarize.predict import load_summarizer_bundle
    from transformer_pl.tasks.summarize.rouge import (
        ROUGE_TYPES,
        lead_lines,
        longest_lines,
        rouge_per_summary,
    )
    from transformer_pl.tasks.translate.predict import translate_texts

    settings, decoding = params.evaluate, params.decode
    lines = params.tasks.summarize.baseline_lines
    model, tokenizer, bundle = load_summarizer_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )

    def summarize(sources: list[str]) -> list[str]:
        return translate_texts(
            model,
            tokenizer,
            sources,
            decoding,
            bundle.max_length,
            settings.batch_size,
            bundle.truncate_from,
        )

    extract = {"longest": longest_lines, "lead": lead_lines}
    metrics: dict[str, Any] = {}
    predictions: dict[str, Any] = {}
    summaries: dict[str, list[str]] = {}
    per_summary: dict[str, Any] = {}  # each summary's ROUGE scores, a column per type
    for split in SCORED_SPLITS:
        sources = frames[split]["text"].tolist()
        references = frames[split]["target"].tolist()
        started = time.perf_counter()
        summaries[split] = summarize(sources)
        seconds = time.perf_counter() - started
        ours = rouge_per_summary(summaries[split], references)
        per_summary[split] = ours
        metrics |= {
            f"{split}_{name}": 100 * float(ours[:, column].mean())
            for column, name in enumerate(ROUGE_TYPES)
        }
        for prefix, kind in BASELINES.items():
            extracted = [extract[kind](source, lines) for source in sources]
            theirs = rouge_per_summary(extracted, references)
            metrics |= {
                f"{prefix}_{split}_{name}": 100 * float(theirs[:, column].mean())
                for column, name in enumerate(ROUGE_TYPES)
            }
            for column, name in enumerate(ROUGE_TYPES):
                if name == "rouge2":
                    continue
                difference = paired_bootstrap(
                    100 * ours[:, column],
                    100 * theirs[:, column],
                    resamples=settings.bootstrap_resamples,
                    seed=params.seed,
                )
                metrics |= difference.as_metrics(f"{split}_{name}_minus_{prefix}")
        metrics |= {
            f"{split}_examples": len(sources),
            f"{split}_summarize_seconds": round(seconds, 2),
        }
        predictions[split] = pd.DataFrame(
            {"source": sources, "reference": references, "summary": summaries[split]}
        )
    sources = frames["test"]["text"].tolist()
    rouge_l = ROUGE_TYPES.index("rougeL")
    by_length = metric_by_length(
        sources,
        lambda positions: 100 * per_summary["test"][positions, rouge_l].mean(),
        "rougeL",
        settings.length_buckets,
    )
    write_metric_by_length(by_length, "rougeL", plots_dir)
    metrics |= measure_latency(
        lambda source: summarize([source]), sources[: settings.latency_examples]
    )
    samples = [
        {"source": source, "reference": reference, "summary": summary}
        for source, reference, summary in list(
            zip(sources, frames["test"]["target"], summaries["test"], strict=True)
        )[: settings.samples]
    ]
    return metrics, samples, predictions


def paired_val_difference(ours: Any, theirs: Any, resamples: int, seed: int) -> dict[str, float]:
    """`val_rougeL_minus_champion` and its 95% interval, from two versions' val summaries."""
    from transformer_pl.significance import paired_bootstrap
    from transformer_pl.tasks.summarize.rouge import ROUGE_TYPES, rouge_per_summary

    column = ROUGE_TYPES.index("rougeL")

    def rouge_l(predictions: Any) -> Any:
        scores = rouge_per_summary(
            predictions["summary"].tolist(), predictions["reference"].tolist()
        )
        return 100 * scores[:, column]

    difference = paired_bootstrap(rouge_l(ours), rouge_l(theirs), resamples=resamples, seed=seed)
    return difference.as_metrics("val_rougeL_minus_champion")
