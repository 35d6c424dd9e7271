"""The language-modelling task as the stages see it (tasks/protocol.py)."""

from transformer_pl.tasks.lm.evaluate import evaluate_language_model, paired_val_difference
from transformer_pl.tasks.lm.predict import TransformerGeneratorModel
from transformer_pl.tasks.lm.recipe import language_model_recipe
from transformer_pl.tasks.protocol import Task
from transformer_pl.tasks.sequence import decoding_fields

LM = Task(
    name="lm",
    finetune_recipe=language_model_recipe,
    evaluate=evaluate_language_model,
    paired_val_difference=paired_val_difference,
    registered_fields=decoding_fields,
    pyfunc_model=TransformerGeneratorModel,
)
