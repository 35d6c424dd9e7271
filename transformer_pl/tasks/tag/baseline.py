"""The CoNLL-2003 shared-task baseline (Tjong Kim Sang & De Meulder, 2003): tag the phrases
that were entities in the training data, preferring the longest phrase. The paper says "only
entities which had a unique class"; a phrase seen with several types taking its most frequent
one (ties: the alphabetically first) reproduces the paper's Table 5 figures exactly, dropping
such phrases does not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from transformer_pl.tasks.tag.iob import entity_spans, spans_to_tags


class PhraseBaseline:
    """A lookup table from training entity phrases (exact words) to their entity type."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, ...], str] = {}
        self._longest = 0

    @property
    def phrases(self) -> int:
        """How many training phrases it knows."""
        return len(self._types)

    def fit(
        self, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]
    ) -> PhraseBaseline:
        """Collect every entity phrase of the training data (IOB2 `tags`) with its most
        frequent type (ties: the alphabetically first)."""
        if len(sentences) != len(tags):
            raise ValueError(f"{len(sentences)} sentences but {len(tags)} tag sequences")
        seen: dict[tuple[str, ...], Counter[str]] = {}
        for index, (words, sentence_tags) in enumerate(zip(sentences, tags, strict=True)):
            if len(words) != len(sentence_tags):
                raise ValueError(
                    f"sentence {index}: {len(words)} words but {len(sentence_tags)} tags"
                )
            for entity_type, start, end in entity_spans(sentence_tags):
                seen.setdefault(tuple(words[start:end]), Counter())[entity_type] += 1
        self._types = {
            phrase: min(types, key=lambda kind: (-types[kind], kind))
            for phrase, types in seen.items()
        }
        self._longest = max(map(len, self._types), default=0)
        return self

    def predict(self, sentence: Sequence[str]) -> list[str]:
        """IOB2 tags: left to right, the longest known phrase starting at each word, else O."""
        spans: list[tuple[str, int, int]] = []
        start = 0
        while start < len(sentence):
            for end in range(min(len(sentence), start + self._longest), start, -1):
                entity_type = self._types.get(tuple(sentence[start:end]))
                if entity_type is not None:
                    spans.append((entity_type, start, end))
                    start = end
                    break
            else:
                start += 1
        return spans_to_tags(spans, len(sentence))

    def predict_all(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        """predict for each sentence."""
        return [self.predict(sentence) for sentence in sentences]
