"""params.yaml for classification: its datasets' spec (`datasets.<name>` with task classify)
and `tasks.classify`, how a classifier is built, taught, calibrated and compared."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveFloat, model_validator

from transformer_pl.dataset_spec import DatasetSpecBase
from transformer_pl.section import Section
from transformer_pl.task_settings import TaskSettingsBase


class ClassifyDataset(DatasetSpecBase):
    """A dataset of texts, each with a class (the unlabeled split's without one)."""

    labelled: ClassVar[bool] = True
    columns: ClassVar[tuple[str, ...]] = ("label",)

    task: Literal["classify"]
    label_column: str
    label_names: list[str]
    # Raw label value (as written in the file) -> label name; identity on label_names when unset.
    label_values: dict[str, str] | None = None

    @model_validator(mode="after")
    def _labels_named(self) -> ClassifyDataset:
        if self.label_values:
            unknown = sorted(set(self.label_values.values()) - set(self.label_names))
            if unknown:
                raise ValueError(f"label_values maps to names not in label_names: {unknown}")
        return self

    def source_columns(self, split: str) -> dict[str, str]:
        columns = super().source_columns(split)
        return columns if split == "unlabeled" else {**columns, "label": self.label_column}


class TeacherParams(Section):
    """tasks.classify.teacher: distil an n-gram teacher through the dataset's unlabeled split
    (teacher.py)."""

    # none: the classifier fits the train split's labels alone. nb_logistic: a naive-Bayes-
    # weighted logistic regression over tokens and hashed token bigrams is fitted on them first,
    # and the classifier fits the train split's labels and the teacher's class probabilities for
    # every unlabeled text. auto: nb_logistic for a classification dataset with an unlabeled
    # split, else none.
    kind: Literal["auto", "none", "nb_logistic"] = "auto"
    buckets: int = Field(2**21, ge=1)  # hashed bigram columns
    # Inverse L2 strengths tried; the teacher keeps the best on val.
    c_grid: list[PositiveFloat] = Field([0.1, 0.3, 1.0, 3.0], min_length=1)
    smoothing: float = Field(1.0, gt=0)  # added to each feature's count per class
    # Temper the teacher's probabilities to fit val's labels (one temperature) before they
    # become the classifier's targets.
    calibrate: bool = True


class ClassifySettings(TaskSettingsBase):
    # The pretraining objectives that fit the classifier's encoder, the first being what
    # pretrain.objective "auto" picks; and the val metric promotion decides on.
    pretraining_objectives: ClassVar[tuple[str, ...]] = ("ppmi_svd", "mlm")
    headline_metric: ClassVar[tuple[str, bool]] = ("val_accuracy", True)

    pooling: Literal["mean", "max", "mean_max", "cls"] = "mean"
    classifier_dropout: float = Field(0.1, ge=0, lt=1)
    # The encoder adds a hashed (previous token, token) embedding to each token's
    # (model/transformer.py: BigramEmbedding); 0: off.
    bigram_buckets: int = Field(524_288, ge=0)
    bigram_dim: int = Field(32, gt=0)
    freeze_encoder: bool = False
    layer_lr_decay: float = Field(1.0, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    teacher: TeacherParams = TeacherParams()
    # Fit a temperature on val for the served probabilities (calibration.py).
    calibrate: bool = True
    calibration_bins: int = Field(15, ge=2)
    # TF-IDF baseline's inverse regularisation strengths, log-scale; extended past an edge while
    # the best on val is there.
    baseline_c_grid: list[PositiveFloat] = Field([0.25, 1.0, 4.0, 16.0, 64.0, 256.0], min_length=1)
    baseline_max_features: int | None = Field(None, gt=0)

    def teacher_for(self, spec: DatasetSpecBase) -> Literal["nb_logistic"] | None:
        """The teacher finetune distils through the dataset's unlabeled split; None for none."""
        kind = self.teacher.kind
        if kind == "auto":
            return "nb_logistic" if "unlabeled" in spec.splits else None
        return None if kind == "none" else kind

    def dataset_problem(self, spec: DatasetSpecBase) -> str | None:
        if self.teacher.kind == "nb_logistic" and "unlabeled" not in spec.splits:
            return (
                "tasks.classify.teacher.kind 'nb_logistic' labels the dataset's unlabeled "
                f"split, and it has none (splits: {', '.join(spec.splits)}): add one or set it "
                "to 'none'"
            )
        return None
