"""params.yaml `tasks.translate`: how a translator is trained."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from transformer_pl.section import Section


class TranslateSettings(Section):
    # A translator is not pretrained; promotion decides on val BLEU.
    pretraining_objectives: ClassVar[tuple[str, ...]] = ()
    headline_metric: ClassVar[tuple[str, bool]] = ("val_bleu", True)
    input_length_key: ClassVar[str] = (
        "encode.max_length"  # what bounds one input (<= model.max_len)
    )
    decodes: ClassVar[bool] = True

    label_smoothing: float = Field(0.1, ge=0, lt=1)  # the original Transformer's
