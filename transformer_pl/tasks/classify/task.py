"""The classification task as the stages see it (tasks/protocol.py)."""

from transformer_pl.tasks.classify.evaluate import (
    evaluate_classifier,
    paired_val_difference,
    registered_fields,
)
from transformer_pl.tasks.classify.predict import TransformerClassifierModel
from transformer_pl.tasks.classify.recipe import classifier_recipe
from transformer_pl.tasks.protocol import Task

CLASSIFY = Task(
    name="classify",
    finetune_recipe=classifier_recipe,
    evaluate=evaluate_classifier,
    paired_val_difference=paired_val_difference,
    registered_fields=registered_fields,
    pyfunc_model=TransformerClassifierModel,
)
