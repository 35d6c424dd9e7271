"""The translation task as the stages see it (tasks/protocol.py)."""

from transformer_pl.tasks.protocol import Task
from transformer_pl.tasks.sequence import decoding_fields
from transformer_pl.tasks.translate.evaluate import evaluate_translator, paired_val_difference
from transformer_pl.tasks.translate.predict import TransformerTranslatorModel
from transformer_pl.tasks.translate.recipe import translator_recipe

TRANSLATE = Task(
    name="translate",
    finetune_recipe=translator_recipe,
    evaluate=evaluate_translator,
    paired_val_difference=paired_val_difference,
    registered_fields=decoding_fields,
    pyfunc_model=TransformerTranslatorModel,
)
