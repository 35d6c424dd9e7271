"""How evaluate scores a reader: the official SQuAD v1.1 exact match and F1 beside the sliding-
window baseline of Rajpurkar et al. (2016), with the paired interval of each F1 difference
(questions resampled)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.protocol import SCORED_SPLITS, Evaluation


def evaluate_reader(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """The reader's answers to the val and test questions (`answer_questions`, as served) and
    the baseline's, scored against every reference answer."""
    import pandas as pd

    from transformer_pl.latency import measure_latency
    from transformer_pl.significance import paired_bootstrap
    from transformer_pl.tasks.qa.predict import answer_questions, load_reader_bundle
    from transformer_pl.tasks.qa.rows import parse_answers
    from transformer_pl.tasks.qa.sliding_window import sliding_window_answers
    from transformer_pl.tasks.qa.squad_metrics import question_scores

    settings, qa = params.evaluate, params.tasks.qa
    model, tokenizer, bundle = load_reader_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )
    metrics: dict[str, Any] = {}
    predictions: dict[str, pd.DataFrame] = {}
    answers: dict[str, list[Any]] = {}
    for split in SCORED_SPLITS:
        frame = frames[split]
        questions, contexts = frame["question"].tolist(), frame["text"].tolist()
        references = [parse_answers(value)[0] for value in frame["answers"]]
        started = time.perf_counter()
        answers[split] = answer_questions(
            model,
            tokenizer,
            bundle,
            questions,
            contexts,
            settings.batch_size,
            qa.max_answer_tokens,
        )
        seconds = time.perf_counter() - started
        texts = [answer.text for answer in answers[split]]
        baseline = sliding_window_answers(questions, contexts, qa.baseline_max_candidate_words)
        ours, theirs = question_scores(texts, references), question_scores(baseline, references)
        difference = paired_bootstrap(
            ours[:, 1] * 100,
            theirs[:, 1] * 100,
            resamples=settings.bootstrap_resamples,
            seed=params.seed,
        )
        metrics |= {
            f"{split}_exact_match": 100 * float(ours[:, 0].mean()),
            f"{split}_f1": 100 * float(ours[:, 1].mean()),
            f"baseline_{split}_exact_match": 100 * float(theirs[:, 0].mean()),
            f"baseline_{split}_f1": 100 * float(theirs[:, 1].mean()),
            f"{split}_questions": len(questions),
            f"{split}_answer_seconds": round(seconds, 2),
            **difference.as_metrics(f"{split}_f1_minus_baseline"),
        }
        predictions[split] = pd.DataFrame(
            {
                "id": frame["id"],
                "question": questions,
                "references": [json.dumps(texts, ensure_ascii=False) for texts in references],
                "predicted_model": texts,
                "predicted_baseline": baseline,
            }
        )
    test = frames["test"]
    metrics |= measure_latency(
        lambda pair: answer_questions(model, tokenizer, bundle, [pair[0]], [pair[1]]),
        list(zip(test["question"], test["text"], strict=True))[: settings.latency_examples],
    )
    samples = [
        {
            "question": question,
            "context": context,
            "references": json.loads(references),
            "answer": answer.text,
            "score": round(answer.score, 4),
        }
        for question, context, references, answer in list(
            zip(
                test["question"],
                test["text"],
                predictions["test"]["references"],
                answers["test"],
                strict=True,
            )
        )[: settings.samples]
    ]
    return metrics, samples, predictions


def paired_val_difference(ours: Any, theirs: Any, resamples: int, seed: int) -> dict[str, float]:
    """`val_f1_minus_champion` and its 95% interval, from two versions' val answers."""
    from transformer_pl.significance import paired_bootstrap
    from transformer_pl.tasks.qa.squad_metrics import question_scores

    def f1(predictions: Any) -> Any:
        references = [json.loads(value) for value in predictions["references"]]
        return question_scores(predictions["predicted_model"].tolist(), references)[:, 1] * 100

    difference = paired_bootstrap(f1(ours), f1(theirs), resamples=resamples, seed=seed)
    return difference.as_metrics("val_f1_minus_champion")


def registered_fields(params: Params, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The longest answer the served model gives, as evaluate scored it."""
    return {"max_answer_tokens": params.tasks.qa.max_answer_tokens}
