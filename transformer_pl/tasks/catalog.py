"""Every task the stages can run, by name (tasks/<name>/task.py)."""

from __future__ import annotations

from transformer_pl.tasks.classify.task import CLASSIFY
from transformer_pl.tasks.lm.task import LM
from transformer_pl.tasks.protocol import Task
from transformer_pl.tasks.qa.task import QA
from transformer_pl.tasks.summarize.task import SUMMARIZE
from transformer_pl.tasks.tag.task import TAG
from transformer_pl.tasks.translate.task import TRANSLATE

TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFY, LM, TRANSLATE, TAG, QA, SUMMARIZE)}


def task_named(name: str) -> Task:
    """The task a dataset (`datasets.<name>.task`) or a bundle's config.json names."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]
