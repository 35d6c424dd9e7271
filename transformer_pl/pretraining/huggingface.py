"""Convert Hugging Face checkpoints (BERT, DistilBERT, RoBERTa encoders; GPT-2) into our models.

A checkpoint is a local directory as `save_pretrained` writes it: config.json and weights in
model.safetensors (sharded or not) or, failing that, pytorch_model.bin, read with
`torch.load(weights_only=True)` so that nothing but tensors is ever unpickled. The Hub is not
reached from here: a Hub id fails at once, asking for a directory downloaded elsewhere.

The conversion is exact, not approximate: what our architecture cannot express (relative
positions, cross-attention, scaled-by-layer attention, an unknown activation) is refused with a
ValueError rather than silently changed. Encoders convert into `Encoder`; a `SequenceClassifier`
or `MaskedLanguageModel` takes them by name, `classifier.encoder.load_state_dict(encoder
.state_dict())`, with the same config. Tokenizers are not converted: `tokenizer_file` gives the
checkpoint's tokenizer.json, for the `tokenizers` library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformer_pl.model.config import Activation, TransformerConfig
from transformer_pl.model.heads import CausalLanguageModel
from transformer_pl.model.positional import sinusoidal_encoding
from transformer_pl.model.transformer import Encoder

ENCODER_TYPES = ("bert", "roberta", "distilbert")
CAUSAL_LM_TYPES = ("gpt2",)

# Hugging Face activation names -> ours; "gelu_new" is GPT-2's tanh approximation of GELU.
_ACTIVATIONS: dict[str, Activation] = {
    "gelu": "gelu",
    "relu": "relu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}
# The base model's attribute name in a task model's state dict (BertForMaskedLM: "bert.").
_BASE_PREFIX = {
    "bert": "bert.",
    "roberta": "roberta.",
    "distilbert": "distilbert.",
    "gpt2": "transformer.",
}


def checkpoint_directory(directory: str | Path) -> Path:
    """The checkpoint's directory, or an error naming what was passed when it is none (a Hub id
    cannot be downloaded from here)."""
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{str(directory)!r} is not a local directory. Hub ids are not downloaded here (the "
            "Hugging Face Hub is unreachable): download the checkpoint elsewhere, e.g. "
            f"`hf download {directory} --local-dir DIR`, and pass that local directory"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a save_pretrained directory")
    return path


def read_hf_config(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's config.json as a dict."""
    return json.loads((checkpoint_directory(directory) / "config.json").read_text())


def tokenizer_file(directory: str | Path) -> Path | None:
    """The checkpoint's tokenizer.json (for `tokenizers.Tokenizer.from_file`), or None."""
    path = checkpoint_directory(directory) / "tokenizer.json"
    return path if path.is_file() else None


def load_hf_state_dict(directory: str | Path) -> dict[str, Tensor]:
    """All weights of the checkpoint: safetensors first (no code runs when reading them), else
    pytorch_model.bin restricted to tensors."""
    path = checkpoint_directory(directory)
    from safetensors.torch import load_file

    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_file(path / shard))
        return state
    if (path / "pytorch_model.bin").is_file():
        loaded = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return dict(loaded)
    raise FileNotFoundError(
        f"{path} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def _refuse(model_type: str, feature: str) -> ValueError:
    return ValueError(f"cannot convert Hugging Face model_type={model_type!r}: {feature}")


def _activation(model_type: str, name: str) -> Activation:
    if name not in _ACTIVATIONS:
        raise _refuse(model_type, f"activation {name!r} is not one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _pad_token_id(hf: Mapping[str, Any], vocab_size: int) -> int:
    """The checkpoint's padding id, else its end-of-sequence id, else 0 (GPT-2 has no pad)."""
    for key in ("pad_token_id", "eos_token_id"):
        value = hf.get(key)
        if isinstance(value, int) and 0 <= value < vocab_size:
            return value
    return 0


def _position_offset(hf: Mapping[str, Any]) -> int:
    """Rows of the position table before position 0: RoBERTa counts from padding_idx + 1."""
    return hf.get("pad_token_id", 1) + 1 if hf["model_type"] == "roberta" else 0


# Our TransformerConfig field -> the config.json key holding it, per encoder family.
_ENCODER_KEYS = {
    "distilbert": {
        "d_model": "dim",
        "n_heads": "n_heads",
        "n_layers": "n_layers",
        "d_ff": "hidden_dim",
        "dropout": "dropout",
        "attention_dropout": "attention_dropout",
        "activation": "activation",
    },
    "bert": {
        "d_model": "hidden_size",
        "n_heads": "num_attention_heads",
        "n_layers": "num_hidden_layers",
        "d_ff": "intermediate_size",
        "dropout": "hidden_dropout_prob",
        "attention_dropout": "attention_probs_dropout_prob",
        "activation": "hidden_act",
    },
}
# Values that save_pretrained may leave out of config.json, at the libraries' defaults.
_ENCODER_DEFAULTS: dict[str, Any] = {"dropout": 0.1, "attention_dropout": 0.1, "activation": "gelu"}


def encoder_config(hf: Mapping[str, Any]) -> TransformerConfig:
    """Our config for a BERT, RoBERTa or DistilBERT config.json (post-LN, embedding LayerNorm,
    learned positions, unscaled embeddings)."""
    model_type = hf.get("model_type")
    if model_type not in ENCODER_TYPES:
        raise _refuse(str(model_type), f"supported encoders are {ENCODER_TYPES}")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise _refuse(model_type, "decoder or cross-attention configurations are not encoders")
    position_type = hf.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise _refuse(model_type, f"position_embedding_type={position_type!r} (only absolute)")
    if model_type == "distilbert" and hf.get("tie_weights_") is False:
        raise _refuse(model_type, "tie_weights_=False")
    keys = _ENCODER_KEYS["distilbert" if model_type == "distilbert" else "bert"]
    values = {
        ours: hf[theirs]
        if ours not in _ENCODER_DEFAULTS
        else hf.get(theirs, _ENCODER_DEFAULTS[ours])
        for ours, theirs in keys.items()
    }
    values["activation"] = _activation(model_type, values["activation"])
    return TransformerConfig(
        vocab_size=hf["vocab_size"],
        max_len=hf["max_position_embeddings"] - _position_offset(hf),
        positional="learned",
        norm_first=False,
        pad_token_id=_pad_token_id(hf, hf["vocab_size"]),
        # DistilBERT hard-codes its LayerNorm epsilon.
        layer_norm_eps=1e-12 if model_type == "distilbert" else hf.get("layer_norm_eps", 1e-12),
        scale_embeddings=False,
        embedding_norm=True,
        **values,
    )


def causal_lm_config(hf: Mapping[str, Any]) -> TransformerConfig:
    """Our config for a GPT-2 config.json (pre-LN with a final LayerNorm, learned positions)."""
    model_type = hf.get("model_type")
    if model_type not in CAUSAL_LM_TYPES:
        raise _refuse(str(model_type), f"supported causal LMs are {CAUSAL_LM_TYPES}")
    if hf.get("add_cross_attention"):
        raise _refuse(model_type, "add_cross_attention=True")
    if hf.get("scale_attn_by_inverse_layer_idx"):
        raise _refuse(model_type, "scale_attn_by_inverse_layer_idx=True")
    if not hf.get("scale_attn_weights", True):
        raise _refuse(model_type, "scale_attn_weights=False (attention without 1/sqrt(d_k))")
    d_model = hf["n_embd"]
    return TransformerConfig(
        vocab_size=hf["vocab_size"],
        d_model=d_model,
        n_heads=hf["n_head"],
        n_layers=hf["n_layer"],
        d_ff=hf.get("n_inner") or 4 * d_model,
        max_len=hf["n_positions"],
        dropout=hf.get("resid_pdrop", 0.1),
        attention_dropout=hf.get("attn_pdrop", 0.1),
        positional="learned",
        norm_first=True,
        activation=_activation(model_type, hf.get("activation_function", "gelu_new")),
        tie_embeddings=hf.get("tie_word_embeddings", True),
        pad_token_id=_pad_token_id(hf, hf["vocab_size"]),
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        scale_embeddings=False,
    )


class _Weights:
    """The checkpoint's tensors under the base model's names, with errors naming what is
    missing."""

    def __init__(self, state: Mapping[str, Tensor], model_type: str) -> None:
        prefix = _BASE_PREFIX[model_type]
        # A task model (BertForMaskedLM, GPT2LMHeadModel) nests the base model under a prefix.
        if any(key.startswith(prefix) for key in state):
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        self.state = state
        self.model_type = model_type

    def __getitem__(self, key: str) -> Tensor:
        if key not in self.state:
            raise _refuse(self.model_type, f"weight {key!r} is missing from the checkpoint")
        return self.state[key]

    def linear(self, ours: str, theirs: str, conv1d: bool = False) -> dict[str, Tensor]:
        """nn.Linear weight and bias; GPT-2's Conv1D stores the weight as (in, out)."""
        weight = self[f"{theirs}.weight"]
        return {
            f"{ours}.weight": weight.t() if conv1d else weight,
            f"{ours}.bias": self[f"{theirs}.bias"],
        }

    def norm(self, ours: str, theirs: str) -> dict[str, Tensor]:
        return {f"{ours}.weight": self[f"{theirs}.weight"], f"{ours}.bias": self[f"{theirs}.bias"]}


def _encoder_positions(weights: _Weights, hf: Mapping[str, Any], max_len: int) -> Tensor:
    """Learned position table with RoBERTa's offset dropped and token type 0 folded in: with
    every token type 0, BERT adds the same vector at each position, so adding it to each row is
    exact."""
    if hf["model_type"] == "distilbert" and "embeddings.position_embeddings.weight" not in (
        weights.state
    ):
        # Sinusoidal DistilBERT may leave its fixed table out; it equals ours.
        return sinusoidal_encoding(max_len, hf["dim"])
    offset = _position_offset(hf)
    table = weights["embeddings.position_embeddings.weight"][offset : offset + max_len]
    if hf["model_type"] != "distilbert":
        table = table + weights["embeddings.token_type_embeddings.weight"][0]
    return table


def _encoder_state(weights: _Weights, hf: Mapping[str, Any], config: TransformerConfig) -> dict:
    state = {
        "embedding.weight": weights["embeddings.word_embeddings.weight"],
        "positional.weight": _encoder_positions(weights, hf, config.max_len),
        **weights.norm("embedding_norm", "embeddings.LayerNorm"),
    }
    for i in range(config.n_layers):
        ours = f"layers.{i}"
        if hf["model_type"] == "distilbert":
            theirs = f"transformer.layer.{i}"
            names = {
                "self_attn.q_proj": "attention.q_lin",
                "self_attn.k_proj": "attention.k_lin",
                "self_attn.v_proj": "attention.v_lin",
                "self_attn.out_proj": "attention.out_lin",
                "ffn.w_1": "ffn.lin1",
                "ffn.w_2": "ffn.lin2",
            }
            norms = {"self_attn_norm": "sa_layer_norm", "ffn_norm": "output_layer_norm"}
        else:
            theirs = f"encoder.layer.{i}"
            names = {
                "self_attn.q_proj": "attention.self.query",
                "self_attn.k_proj": "attention.self.key",
                "self_attn.v_proj": "attention.self.value",
                "self_attn.out_proj": "attention.output.dense",
                "ffn.w_1": "intermediate.dense",
                "ffn.w_2": "output.dense",
            }
            norms = {"self_attn_norm": "attention.output.LayerNorm", "ffn_norm": "output.LayerNorm"}
        for name, hf_name in names.items():
            state.update(weights.linear(f"{ours}.{name}", f"{theirs}.{hf_name}"))
        for name, hf_name in norms.items():
            state.update(weights.norm(f"{ours}.{name}", f"{theirs}.{hf_name}"))
    return state


def _gpt2_state(weights: _Weights, config: TransformerConfig, lm_head: Tensor | None) -> dict:
    state = {
        "decoder.embedding.weight": weights["wte.weight"],
        "decoder.positional.weight": weights["wpe.weight"][: config.max_len],
        **weights.norm("decoder.norm", "ln_f"),
        "lm_head.weight": weights["wte.weight"] if lm_head is None else lm_head,
    }
    for i in range(config.n_layers):
        ours, theirs = f"decoder.layers.{i}", f"h.{i}"
        # c_attn is Q, K and V fused along the output dimension.
        fused = weights.linear("qkv", f"{theirs}.attn.c_attn", conv1d=True)
        q_w, k_w, v_w = fused["qkv.weight"].chunk(3, dim=0)
        q_b, k_b, v_b = fused["qkv.bias"].chunk(3, dim=0)
        for name, weight, bias in (("q", q_w, q_b), ("k", k_w, k_b), ("v", v_w, v_b)):
            state[f"{ours}.self_attn.{name}_proj.weight"] = weight
            state[f"{ours}.self_attn.{name}_proj.bias"] = bias
        state.update(weights.linear(f"{ours}.self_attn.out_proj", f"{theirs}.attn.c_proj", True))
        state.update(weights.linear(f"{ours}.ffn.w_1", f"{theirs}.mlp.c_fc", conv1d=True))
        state.update(weights.linear(f"{ours}.ffn.w_2", f"{theirs}.mlp.c_proj", conv1d=True))
        state.update(weights.norm(f"{ours}.self_attn_norm", f"{theirs}.ln_1"))
        state.update(weights.norm(f"{ours}.ffn_norm", f"{theirs}.ln_2"))
    return state


def load_hf_encoder(directory: str | Path) -> tuple[Encoder, TransformerConfig]:
    """A BERT, RoBERTa or DistilBERT checkpoint as our Encoder (any task head is ignored), in
    eval mode. Token types are taken to be all 0, as for single-segment inputs."""
    hf = read_hf_config(directory)
    config = encoder_config(hf)
    weights = _Weights(load_hf_state_dict(directory), hf["model_type"])
    model = Encoder(config)
    model.load_state_dict(_encoder_state(weights, hf, config))
    return model.eval(), config


def load_hf_causal_lm(directory: str | Path) -> tuple[CausalLanguageModel, TransformerConfig]:
    """A GPT-2 checkpoint (GPT2Model or GPT2LMHeadModel) as our CausalLanguageModel, in eval
    mode."""
    hf = read_hf_config(directory)
    config = causal_lm_config(hf)
    state = load_hf_state_dict(directory)
    lm_head = None
    if not config.tie_embeddings:
        if "lm_head.weight" not in state:
            raise _refuse("gpt2", "tie_word_embeddings=False but lm_head.weight is missing")
        lm_head = state["lm_head.weight"]
    model = CausalLanguageModel(config)
    model.load_state_dict(_gpt2_state(_Weights(state, "gpt2"), config, lm_head))
    return model.eval(), config
