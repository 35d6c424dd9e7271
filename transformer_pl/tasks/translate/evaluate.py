"""How evaluate scores a translator: corpus BLEU and chrF beside the untranslated source, with
the paired interval of the BLEU difference."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.protocol import SCORED_SPLITS, Evaluation


def evaluate_translator(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """Corpus BLEU and chrF of the val and test translations (the decode settings: beam search
    when beam_size > 1; greedy beside it on test), against copying the source untranslated, with
    the paired interval of the BLEU difference."""
    import pandas as pd

    from transformer_pl.latency import measure_latency
    from transformer_pl.length_slices import metric_by_length, write_metric_by_length
    from transformer_pl.significance import paired_bootstrap
    from transformer_pl.tasks.translate.bleu import (
        bleu_and_chrf,
        bleu_from_statistics,
        bleu_statistics,
    )
    from transformer_pl.tasks.translate.predict import load_translator_bundle, translate_texts

    settings, decoding = params.evaluate, params.decode
    model, tokenizer, bundle = load_translator_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )

    def translate(texts: list[str], beam_size: int) -> list[str]:
        chosen = decoding.model_copy(update={"beam_size": beam_size})
        return translate_texts(
            model, tokenizer, texts, chosen, bundle.max_length, settings.batch_size
        )

    metrics: dict[str, Any] = {}
    predictions: dict[str, Any] = {}
    translations: dict[str, list[str]] = {}
    statistics: dict[str, Any] = {}  # BLEU's sufficient statistics per sentence
    for split in SCORED_SPLITS:
        sources = frames[split]["text"].tolist()
        references = frames[split]["target"].tolist()
        started = time.perf_counter()
        translations[split] = translate(sources, decoding.beam_size)
        seconds = time.perf_counter() - started
        scores = bleu_and_chrf(translations[split], references)
        baseline = bleu_and_chrf(sources, references)
        statistics[split] = bleu_statistics(translations[split], references)
        difference = paired_bootstrap(
            statistics[split],
            bleu_statistics(sources, references),
            statistic=bleu_from_statistics,
            resamples=settings.bootstrap_resamples,
            seed=params.seed,
        )
        metrics |= {
            f"{split}_bleu": scores["bleu"],
            f"{split}_chrf": scores["chrf"],
            f"baseline_{split}_bleu": baseline["bleu"],
            f"baseline_{split}_chrf": baseline["chrf"],
            f"{split}_examples": len(sources),
            f"{split}_translate_seconds": round(seconds, 2),
            **difference.as_metrics(f"{split}_bleu_minus_baseline"),
            "bleu_signature": scores["bleu_signature"],
            "chrf_signature": scores["chrf_signature"],
        }
        predictions[split] = pd.DataFrame(
            {"source": sources, "reference": references, "translation": translations[split]}
        )
    sources, references = frames["test"]["text"].tolist(), frames["test"]["target"].tolist()
    by_length = metric_by_length(
        sources,
        lambda positions: bleu_from_statistics(statistics["test"][positions].sum(axis=0)),
        "bleu",
        settings.length_buckets,
    )
    write_metric_by_length(by_length, "bleu", plots_dir)
    greedy = translate(sources, 1) if decoding.beam_size > 1 else translations["test"]
    greedy_scores = bleu_and_chrf(greedy, references)
    metrics |= {
        "test_bleu_greedy": greedy_scores["bleu"],
        "test_chrf_greedy": greedy_scores["chrf"],
        **measure_latency(
            lambda source: translate([source], decoding.beam_size),
            sources[: settings.latency_examples],
        ),
    }
    samples = [
        {"source": source, "reference": reference, "translation": beam, "greedy": greedy_text}
        for source, reference, beam, greedy_text in list(
            zip(sources, references, translations["test"], greedy, strict=True)
        )[: settings.samples]
    ]
    return metrics, samples, predictions


def paired_val_difference(ours: Any, theirs: Any, resamples: int, seed: int) -> dict[str, float]:
    """`val_bleu_minus_champion` and its 95% interval, from two versions' val translations."""
    from transformer_pl.significance import paired_bootstrap
    from transformer_pl.tasks.translate.bleu import bleu_from_statistics, bleu_statistics

    difference = paired_bootstrap(
        bleu_statistics(ours["translation"].tolist(), ours["reference"].tolist()),
        bleu_statistics(theirs["translation"].tolist(), theirs["reference"].tolist()),
        statistic=bleu_from_statistics,
        resamples=resamples,
        seed=seed,
    )
    return difference.as_metrics("val_bleu_minus_champion")
