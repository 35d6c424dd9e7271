"""What params.yaml holds per task: a dataset spec per task (a union on `task`), and `tasks:`,
one section per task, each validated by its task's schema; only the dataset's task's section is
read."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from transformer_pl.section import Section
from transformer_pl.tasks.classify.settings import ClassifyDataset, ClassifySettings
from transformer_pl.tasks.lm.settings import LanguageModelDataset, LanguageModelSettings
from transformer_pl.tasks.qa.settings import QADataset, QASettings
from transformer_pl.tasks.summarize.settings import SummarizeDataset, SummarizeSettings
from transformer_pl.tasks.tag.settings import TagDataset, TagSettings
from transformer_pl.tasks.translate.settings import TranslateDataset, TranslateSettings

DatasetSpec = Annotated[
    ClassifyDataset
    | LanguageModelDataset
    | TranslateDataset
    | TagDataset
    | QADataset
    | SummarizeDataset,
    Field(discriminator="task"),
]

TaskSettings = (
    ClassifySettings
    | LanguageModelSettings
    | TranslateSettings
    | TagSettings
    | QASettings
    | SummarizeSettings
)


class TasksParams(Section):
    classify: ClassifySettings = ClassifySettings()
    lm: LanguageModelSettings = LanguageModelSettings()
    translate: TranslateSettings = TranslateSettings()
    tag: TagSettings = TagSettings()
    qa: QASettings = QASettings()
    summarize: SummarizeSettings = SummarizeSettings()


_DATASET_SPEC: TypeAdapter[DatasetSpec] = TypeAdapter(DatasetSpec)


def dataset_spec(**fields: Any) -> DatasetSpec:
    """The task's dataset spec that `fields` (a `datasets.<name>` entry) describe, validated."""
    return _DATASET_SPEC.validate_python(fields)
