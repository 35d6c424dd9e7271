"""Where every stage reads and writes, relative to the project root (the DVC workspace).

One place for these paths: the stage declarations, `dvc.yaml` and the tests all use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    def __truediv__(self, relative: str) -> Path:
        return self.root / relative

    # Relative names, as written in dvc.yaml.
    RAW = "data/raw"
    CLEAN = "data/interim/clean"
    QUARANTINE = "data/quarantine"
    VALIDATION = "data/reports/validation"
    SPLITS = "data/processed/splits"  # the development splits: train, val (and unlabeled)
    TEST_SPLIT = "data/processed/test"  # test alone: only evaluate declares it
    TOKENIZER = "data/processed/tokenizer.json"
    ENCODED = "data/processed/encoded"
    PRETRAINED = "models/pretrain"
    FINETUNED = "models/finetune"
    METRICS = "metrics"
    PLOTS = "plots/evaluate"  # evaluate's plots: confusion, ROC, PR, reliability
    PRETRAIN_PLOTS = "plots/pretrain"  # loss curves
    FINETUNE_PLOTS = "plots/finetune"

    def split_file(self, split: str) -> Path:
        """Where `split` stage writes one split (`write_frames`: `<split>.parquet`)."""
        folder = self.TEST_SPLIT if split == "test" else self.SPLITS
        return self / folder / f"{split}.parquet"
