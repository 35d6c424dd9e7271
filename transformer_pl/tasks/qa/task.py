"""The extractive question-answering task as the stages see it (tasks/protocol.py)."""

from transformer_pl.tasks.protocol import Task
from transformer_pl.tasks.qa.evaluate import (
    evaluate_reader,
    paired_val_difference,
    registered_fields,
)
from transformer_pl.tasks.qa.predict import TransformerReaderModel
from transformer_pl.tasks.qa.recipe import reader_recipe

QA = Task(
    name="qa",
    finetune_recipe=reader_recipe,
    evaluate=evaluate_reader,
    paired_val_difference=paired_val_difference,
    registered_fields=registered_fields,
    pyfunc_model=TransformerReaderModel,
)
