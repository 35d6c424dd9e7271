"""How evaluate scores a language model: perplexity per token and per word beside unigram
frequencies, with the paired interval over lines; samples continue the prompts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.protocol import SCORED_SPLITS, Evaluation


def evaluate_language_model(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """Perplexity of every val/test token, each predicted once from up to a training block of
    context (`token_nll`); per token of our tokenizer and per word of the text, which compares
    across tokenizers (WikiText results are per word). Beside it the unigram baseline, and the
    paired interval of the difference over lines. Samples: each prompt continued greedily and
    sampled."""
    import numpy as np
    import pandas as pd

    from transformer_pl.latency import measure_latency
    from transformer_pl.significance import paired_bootstrap
    from transformer_pl.tasks.lm.perplexity import (
        count_words,
        per_token_perplexity,
        perplexity,
        unigram_token_nll,
        word_perplexity,
    )
    from transformer_pl.tasks.lm.predict import (
        generate_texts,
        line_stream,
        load_lm_bundle,
        token_nll,
    )
    from transformer_pl.tasks.sequence import token_ids

    settings, decoding = params.evaluate, params.decode
    model, tokenizer, bundle = load_lm_bundle(layout / Layout.FINETUNED, layout / Layout.TOKENIZER)
    vocab_size = tokenizer.get_vocab_size()
    train_ids = line_stream(tokenizer, frames["train"]["text"].tolist())[1:]
    # A model that learned nothing scores every token 1/vocab_size: the bound to beat.
    metrics: dict[str, Any] = {"uniform_perplexity": float(vocab_size)}
    predictions: dict[str, Any] = {}
    for split in SCORED_SPLITS:
        texts = frames[split]["text"].tolist()
        stream = line_stream(tokenizer, texts)
        started = time.perf_counter()
        model_nll = token_nll(model, stream, bundle.max_length, settings.batch_size)
        seconds = time.perf_counter() - started
        baseline_nll = unigram_token_nll(train_ids, stream[1:], vocab_size)
        words = count_words(texts)
        metrics |= {
            f"{split}_perplexity": perplexity(float(model_nll.sum()), len(model_nll)),
            f"{split}_word_perplexity": word_perplexity(float(model_nll.sum()), words),
            f"{split}_tokens": len(model_nll),
            f"{split}_words": words,
            f"{split}_score_seconds": round(seconds, 2),
            f"baseline_{split}_perplexity": perplexity(float(baseline_nll.sum()), len(model_nll)),
            f"baseline_{split}_word_perplexity": word_perplexity(float(baseline_nll.sum()), words),
        }
        # Lines are the resampled units (neighbouring tokens' losses are not independent), and
        # they stay the same units whatever the tokenizer, so two models' lines pair up.
        line_ends = np.cumsum([len(ids) + 1 for ids in token_ids(tokenizer, texts)])
        line_starts = np.concatenate([[0], line_ends[:-1]])
        lines = pd.DataFrame(
            {
                "model_nll": np.add.reduceat(model_nll, line_starts),
                "baseline_nll": np.add.reduceat(baseline_nll, line_starts),
                "tokens": line_ends - line_starts,
                "words": [len(text.split()) + 1 for text in texts],
            }
        )
        predictions[split] = lines
        difference = paired_bootstrap(
            lines[["model_nll", "tokens"]].to_numpy(),
            lines[["baseline_nll", "tokens"]].to_numpy(),
            statistic=per_token_perplexity,
            resamples=settings.bootstrap_resamples,
            seed=params.seed,
        )
        metrics |= difference.as_metrics(f"{split}_perplexity_minus_baseline")

    prompts = params.tasks.lm.prompts
    greedy = generate_texts(
        model, tokenizer, prompts, decoding.model_copy(update={"do_sample": False})
    )
    sampling = {"do_sample": True, "seed": params.seed if decoding.seed is None else decoding.seed}
    sampled = generate_texts(model, tokenizer, prompts, decoding.model_copy(update=sampling))
    if prompts:
        metrics |= measure_latency(
            lambda prompt: generate_texts(model, tokenizer, [prompt], decoding),
            prompts[: settings.latency_examples],
        )
    samples = [
        {"prompt": prompt, "greedy": greedy_text, "sampled": sampled_text}
        for prompt, greedy_text, sampled_text in zip(prompts, greedy, sampled, strict=True)
    ]
    return metrics, samples, predictions


def paired_val_difference(ours: Any, theirs: Any, resamples: int, seed: int) -> dict[str, float]:
    """`val_word_perplexity_minus_champion` and its 95% interval, from two versions' per-line val
    predictions (per word: comparable across tokenizers)."""
    from transformer_pl.significance import paired_bootstrap
    from transformer_pl.tasks.lm.perplexity import per_token_perplexity

    columns = ["model_nll", "words"]
    difference = paired_bootstrap(
        ours[columns].to_numpy(),
        theirs[columns].to_numpy(),
        statistic=per_token_perplexity,
        resamples=resamples,
        seed=seed,
    )
    return difference.as_metrics("val_word_perplexity_minus_champion")
