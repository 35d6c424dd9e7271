"""LightningModules that train the models of `transformer_pl.model`, one per objective."""

from transformer_pl.tasks.base import TransformerTask, load_exported_model
from transformer_pl.tasks.causal_lm import CausalLMTask
from transformer_pl.tasks.classifier import ClassifierTask, LoadedKeys
from transformer_pl.tasks.masked_lm import MaskedLMTask
from transformer_pl.tasks.seq2seq import Seq2SeqTask
from transformer_pl.tasks.throughput import TokenThroughput

__all__ = [
    "CausalLMTask",
    "ClassifierTask",
    "LoadedKeys",
    "MaskedLMTask",
    "Seq2SeqTask",
    "TokenThroughput",
    "TransformerTask",
    "load_exported_model",
]
