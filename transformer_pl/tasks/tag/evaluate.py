"""How evaluate scores a tagger: entity-level precision, recall and F1 (conlleval's), overall
and per type, beside the CoNLL-2003 shared-task baseline fitted on train, with the paired
interval of the F1 difference (sentences resampled)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.protocol import SCORED_SPLITS, Evaluation


def evaluate_tagger(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """The tagger's tags for the val and test sentences' words (`tag_words`, as served), scored
    beside the phrase baseline; the served path from raw text is timed on test."""
    import pandas as pd

    from transformer_pl.latency import measure_latency
    from transformer_pl.significance import paired_bootstrap
    from transformer_pl.tasks.tag.baseline import PhraseBaseline
    from transformer_pl.tasks.tag.metrics import entity_scores, f1_from_counts, sentence_counts
    from transformer_pl.tasks.tag.predict import load_tagger_bundle, tag_texts, tag_words

    settings = params.evaluate
    model, tokenizer, bundle = load_tagger_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )
    words = {split: [text.split() for text in frames[split]["text"]] for split in frames}
    gold = {split: [tags.split() for tags in frames[split]["tags"]] for split in frames}
    baseline = PhraseBaseline().fit(words["train"], gold["train"])
    metrics: dict[str, Any] = {"baseline_phrases": baseline.phrases}
    predictions: dict[str, pd.DataFrame] = {}
    tagged: dict[str, list[list[str]]] = {}
    for split in SCORED_SPLITS:
        started = time.perf_counter()
        tagged[split] = tag_words(model, tokenizer, bundle, words[split], settings.batch_size)
        seconds = time.perf_counter() - started
        guessed = baseline.predict_all(words[split])
        scores = entity_scores(gold[split], tagged[split])
        baseline_scores = entity_scores(gold[split], guessed)
        difference = paired_bootstrap(
            sentence_counts(gold[split], tagged[split]),
            sentence_counts(gold[split], guessed),
            statistic=f1_from_counts,
            resamples=settings.bootstrap_resamples,
            seed=params.seed,
        )
        metrics |= {f"{split}_{name}": scores[name] for name in ("precision", "recall", "f1")} | {
            f"baseline_{split}_{name}": baseline_scores[name]
            for name in ("precision", "recall", "f1")
        }
        metrics |= {
            f"{split}_f1_{kind}": figures["f1"] for kind, figures in scores["per_type"].items()
        }
        metrics |= {
            f"{split}_sentences": len(words[split]),
            f"{split}_entities": scores["entities_gold"],
            f"{split}_tag_seconds": round(seconds, 2),
            **difference.as_metrics(f"{split}_f1_minus_baseline"),
        }
        predictions[split] = pd.DataFrame(
            {
                "text": frames[split]["text"],
                "tags": frames[split]["tags"],
                "predicted_model": [" ".join(tags) for tags in tagged[split]],
                "predicted_baseline": [" ".join(tags) for tags in guessed],
            }
        )
    texts = frames["test"]["text"].tolist()
    metrics |= measure_latency(
        lambda text: tag_texts(model, tokenizer, bundle, [text]),
        texts[: settings.latency_examples],
    )
    samples = [
        {"text": text, "tags": tags, "predicted": " ".join(predicted)}
        for text, tags, predicted in list(
            zip(texts, frames["test"]["tags"], tagged["test"], strict=True)
        )[: settings.samples]
    ]
    return metrics, samples, predictions


def paired_val_difference(ours: Any, theirs: Any, resamples: int, seed: int) -> dict[str, float]:
    """`val_f1_minus_champion` and its 95% interval, from two versions' val tags."""
    from transformer_pl.significance import paired_bootstrap
    from transformer_pl.tasks.tag.metrics import f1_from_counts, sentence_counts

    def counts(predictions: Any) -> Any:
        return sentence_counts(
            [tags.split() for tags in predictions["tags"]],
            [tags.split() for tags in predictions["predicted_model"]],
        )

    difference = paired_bootstrap(
        counts(ours), counts(theirs), statistic=f1_from_counts, resamples=resamples, seed=seed
    )
    return difference.as_metrics("val_f1_minus_champion")


def registered_fields(params: Params, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Nothing: a tagger is served as trained."""
    return {}
