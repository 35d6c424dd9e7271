"""Translation figures — pure functions: corpus BLEU and chrF (sacreBLEU), and BLEU's per-sentence
sufficient statistics for paired intervals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU, CHRF


def bleu_and_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus BLEU and chrF (sacreBLEU defaults), one reference per hypothesis.

    Keys: `bleu`, `chrf` (0–100) and `bleu_signature`, `chrf_signature` — the strings that make
    a reported score reproducible (tokenizer, smoothing, version).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu, chrf = BLEU(), CHRF()
    reference_streams = [list(references)]
    return {
        "bleu": float(bleu.corpus_score(list(hypotheses), reference_streams).score),
        "chrf": float(chrf.corpus_score(list(hypotheses), reference_streams).score),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """(n, k) BLEU sufficient statistics per sentence (sacreBLEU's: hypothesis and reference
    lengths, n-gram matches and totals): summed over any subset of the sentences they give that
    subset's corpus BLEU (`bleu_from_statistics`), which a paired bootstrap resamples."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    statistics = BLEU()._extract_corpus_statistics(list(hypotheses), [list(references)])
    return np.asarray(statistics, dtype=np.float64)


def bleu_from_statistics(summed: np.ndarray) -> float:
    """Corpus BLEU (0–100, sacreBLEU defaults) from summed `bleu_statistics` rows."""
    return float(BLEU()._compute_score_from_stats([int(value) for value in summed]).score)
