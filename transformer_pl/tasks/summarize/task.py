"""The summarization task as the stages see it (tasks/protocol.py)."""

from transformer_pl.tasks.protocol import Task
from transformer_pl.tasks.sequence import decoding_fields
from transformer_pl.tasks.summarize.evaluate import evaluate_summarizer, paired_val_difference
from transformer_pl.tasks.summarize.predict import TransformerSummarizerModel
from transformer_pl.tasks.summarize.recipe import summarizer_recipe

SUMMARIZE = Task(
    name="summarize",
    finetune_recipe=summarizer_recipe,
    evaluate=evaluate_summarizer,
    paired_val_difference=paired_val_difference,
    registered_fields=decoding_fields,
    pyfunc_model=TransformerSummarizerModel,
)
