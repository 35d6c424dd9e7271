"""Parity of converted Hugging Face checkpoints: small random models saved with save_pretrained,
converted, and compared with the originals in fp32 (no download)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import transformers

from transformer_pl.model import generate
from transformer_pl.pretraining.huggingface import (
    load_hf_causal_lm,
    load_hf_encoder,
    load_hf_state_dict,
    tokenizer_file,
)

VOCAB, HIDDEN, LAYERS, HEADS, FF, POSITIONS = 100, 32, 2, 4, 64, 64
ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """Models this small gain nothing from intra-op threads on a shared 2-core machine."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        yield
    finally:
        torch.set_num_threads(previous)


def _save(model: torch.nn.Module, directory: Path) -> Path:
    model.save_pretrained(directory)  # type: ignore[operator]
    return directory


def _randomise_norms(model: torch.nn.Module) -> None:
    """LayerNorms start at γ = 1, β = 0: perturb them so a swapped norm would show."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)


# BERT and RoBERTa name their sizes alike.
_BERT_SIZES = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "intermediate_size": FF,
}


def _bert() -> torch.nn.Module:
    config = transformers.BertConfig(**_BERT_SIZES, max_position_embeddings=POSITIONS)
    return transformers.BertModel(config, add_pooling_layer=False)


def _roberta() -> torch.nn.Module:
    # Positions start at pad + 1; the tanh GELU and eps 1e-5 exercise those mappings.
    config = transformers.RobertaConfig(
        **_BERT_SIZES,
        max_position_embeddings=POSITIONS + 2,
        pad_token_id=1,
        hidden_act="gelu_new",
        layer_norm_eps=1e-5,
    )
    return transformers.RobertaModel(config, add_pooling_layer=False)


def _distilbert() -> torch.nn.Module:
    config = transformers.DistilBertConfig(
        vocab_size=VOCAB,
        dim=HIDDEN,
        n_layers=LAYERS,
        n_heads=HEADS,
        hidden_dim=FF,
        max_position_embeddings=POSITIONS,
    )
    return transformers.DistilBertModel(config)


def _gpt2(**overrides: object) -> torch.nn.Module:
    sizes = {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_positions": POSITIONS}
    sizes["vocab_size"] = VOCAB
    config = transformers.GPT2Config(bos_token_id=0, eos_token_id=0, **sizes, **overrides)
    return transformers.GPT2LMHeadModel(config)


def _padded_batch(pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two right-padded rows: 12 and 7 real tokens (never the pad id)."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, VOCAB, (2, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    return input_ids.masked_fill(attention_mask == 0, pad), attention_mask


@pytest.mark.parametrize("build", [_bert, _roberta, _distilbert], ids=["bert", "roberta", "distil"])
def test_encoder_hidden_states_match(build, tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf_model = build().eval()
    _randomise_norms(hf_model)
    encoder, config = load_hf_encoder(_save(hf_model, tmp_path))
    input_ids, attention_mask = _padded_batch(config.pad_token_id)
    with torch.no_grad():
        expected = hf_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        ours = encoder(input_ids, attention_mask)
    real = attention_mask.bool()
    torch.testing.assert_close(ours[real], expected[real], atol=ATOL, rtol=0)
    assert not encoder.training and config.max_len == POSITIONS and not config.norm_first


def test_gpt2_logits_and_greedy_generation_match(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf_model = _gpt2().eval()
    _randomise_norms(hf_model)
    model, config = load_hf_causal_lm(_save(hf_model, tmp_path))
    assert config.activation == "gelu_tanh" and config.norm_first and config.tie_embeddings
    input_ids, attention_mask = _padded_batch(pad=0)
    with torch.no_grad():
        expected = hf_model(input_ids=input_ids, attention_mask=attention_mask).logits
        ours = model(input_ids, attention_mask).logits
    real = attention_mask.bool()
    torch.testing.assert_close(ours[real], expected[real], atol=ATOL, rtol=0)

    prompt = input_ids[:1, :5]
    with torch.no_grad():
        hf_tokens = hf_model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=8,
            min_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
        )
    ours_tokens = generate(model, prompt, max_new_tokens=8)
    assert ours_tokens.tolist() == hf_tokens.tolist()


def test_gpt2_untied_head_and_exact_gelu(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf_model = _gpt2(tie_word_embeddings=False, activation_function="gelu").eval()
    model, config = load_hf_causal_lm(_save(hf_model, tmp_path))
    assert not config.tie_embeddings and config.activation == "gelu"
    input_ids, _ = _padded_batch(pad=0)
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids).logits, hf_model(input_ids=input_ids).logits, atol=ATOL, rtol=0
        )


def test_pytorch_bin_is_read_with_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf_model = _bert()
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    hf_model.config.save_pretrained(tmp_path)
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = load_hf_state_dict(tmp_path)
    assert loaded.keys() == state.keys()
    encoder, _ = load_hf_encoder(tmp_path)
    assert torch.equal(encoder.embedding.weight, state["embeddings.word_embeddings.weight"])
    assert tokenizer_file(tmp_path) is None
    (tmp_path / "tokenizer.json").write_text("{}")
    assert tokenizer_file(tmp_path) == tmp_path / "tokenizer.json"


def test_unsupported_model_type_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 10}))
    with pytest.raises(ValueError, match=r"model_type='t5'.*supported encoders"):
        load_hf_encoder(tmp_path)
    with pytest.raises(ValueError, match=r"model_type='t5'.*supported causal LMs"):
        load_hf_causal_lm(tmp_path)


def test_unsupported_feature_is_refused(tmp_path: Path) -> None:
    config = _bert().config
    config.position_embedding_type = "relative_key"
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"model_type='bert'.*relative_key"):
        load_hf_encoder(tmp_path)


def test_hub_id_fails_early_naming_it() -> None:
    with pytest.raises(FileNotFoundError, match=r"'bert-base-uncased'.*download.*local directory"):
        load_hf_encoder("bert-base-uncased")
