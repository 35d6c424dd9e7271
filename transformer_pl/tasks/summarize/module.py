"""Summarization training: the translator's encoder–decoder and teacher forcing (with label
smoothing), exported as a summarize bundle."""

from __future__ import annotations

from typing import ClassVar

from transformer_pl.lightning.module import ExportKind
from transformer_pl.tasks.translate.module import TranslatorModule


class SummarizerModule(TranslatorModule):
    exported_as: ClassVar[ExportKind] = ("task", "summarize")
