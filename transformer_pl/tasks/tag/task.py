"""The named-entity recognition task as the stages see it (tasks/protocol.py)."""

from transformer_pl.tasks.protocol import Task
from transformer_pl.tasks.tag.evaluate import (
    evaluate_tagger,
    paired_val_difference,
    registered_fields,
)
from transformer_pl.tasks.tag.predict import TransformerTaggerModel
from transformer_pl.tasks.tag.recipe import tagger_recipe

TAG = Task(
    name="tag",
    finetune_recipe=tagger_recipe,
    evaluate=evaluate_tagger,
    paired_val_difference=paired_val_difference,
    registered_fields=registered_fields,
    pyfunc_model=TransformerTaggerModel,
)
