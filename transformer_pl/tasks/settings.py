"""params.yaml `tasks:`, one section per task, each validated by its task's schema; only the
dataset's task's section is read."""

from __future__ import annotations

from transformer_pl.section import Section
from transformer_pl.tasks.classify.settings import ClassifySettings
from transformer_pl.tasks.lm.settings import LanguageModelSettings
from transformer_pl.tasks.translate.settings import TranslateSettings

TaskSettings = ClassifySettings | LanguageModelSettings | TranslateSettings


class TasksParams(Section):
    classify: ClassifySettings = ClassifySettings()
    lm: LanguageModelSettings = LanguageModelSettings()
    translate: TranslateSettings = TranslateSettings()
