"""Task models: parameter counts, losses, gradients, determinism, and overfitting one batch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer_pl.model import (
    CausalLanguageModel,
    MaskedLanguageModel,
    Seq2SeqTransformer,
    SequenceClassifier,
    TransformerConfig,
    count_parameters,
)

VARIANTS = [
    {},
    {"positional": "learned"},
    {"positional": "rope"},
    {"norm_first": False},
    {"tie_embeddings": False},
    {"activation": "relu", "attention_impl": "reference"},
    {"n_decoder_layers": 3},
    # What converted BERT/GPT-2 checkpoints use (pretraining/huggingface.py).
    {"embedding_norm": True, "scale_embeddings": False, "activation": "gelu_tanh"},
]


def _build(kind: str, config: TransformerConfig) -> nn.Module:
    if kind == "mlm":
        return MaskedLanguageModel(config)
    if kind == "causal":
        return CausalLanguageModel(config)
    if kind == "classifier":
        return SequenceClassifier(config, num_labels=3)
    return Seq2SeqTransformer(config)


def _loss(kind: str, model: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """A loss on a small random batch with some padding."""
    ids = torch.randint(2, 32, (4, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    if kind == "mlm":
        labels = torch.where(torch.rand(ids.shape, generator=generator) < 0.3, ids, -100)
        labels[:, 0] = ids[:, 0]
        return model(ids.masked_fill(labels != -100, 1), mask, labels).loss
    if kind == "causal":
        return model(ids, mask, ids.masked_fill(mask == 0, -100)).loss
    if kind == "classifier":
        return model(ids, mask, torch.tensor([0, 1, 2, 1])).loss
    return model(ids, ids[:, :6], mask, labels=ids[:, 1:7], label_smoothing=0.1).loss


KINDS = ["mlm", "causal", "classifier", "seq2seq"]


def test_parameter_count_by_hand() -> None:
    config = TransformerConfig(vocab_size=100, d_model=16, n_heads=2, n_layers=2, d_ff=32)
    embedding = 100 * 16
    layer = 4 * (16 * 16 + 16) + (16 * 32 + 32 + 32 * 16 + 16) + 2 * (2 * 16)
    assert count_parameters(config, "mlm") == embedding + 2 * layer + 2 * 16 == 6080
    model = MaskedLanguageModel(config)
    assert sum(p.numel() for p in model.parameters()) == 6080


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("overrides", VARIANTS)
def test_parameter_count_closed_form(make_config, kind: str, overrides: dict) -> None:
    config = make_config(**overrides)
    model = _build(kind, config)
    expected = count_parameters(config, kind, num_labels=3)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("overrides", VARIANTS)
def test_gradients_reach_every_parameter(make_config, kind: str, overrides: dict) -> None:
    torch.manual_seed(0)
    model = _build(kind, make_config(**overrides))
    loss = _loss(kind, model, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_outputs(make_config, kind: str) -> None:
    def run() -> torch.Tensor:
        torch.manual_seed(123)
        model = _build(kind, make_config(dropout=0.1, attention_dropout=0.1)).train()
        return _loss(kind, model, torch.Generator().manual_seed(0))

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_mlm_loss_on_masked_positions_equals_full_cross_entropy(make_config) -> None:
    torch.manual_seed(0)
    model = MaskedLanguageModel(make_config()).eval()
    ids = torch.randint(2, 32, (3, 10))
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, [1, 4]] = ids[0, [1, 4]]
    labels[1, 9] = 5
    labels[2, [0, 2, 5]] = ids[2, [0, 2, 5]]
    out = model(ids, mask, labels)
    full_logits = model(ids, mask).logits
    assert out.logits.shape == (6, 32) and full_logits.shape == (3, 10, 32)
    torch.testing.assert_close(out.logits, full_logits[labels != -100])
    torch.testing.assert_close(
        out.loss, F.cross_entropy(full_logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    )


def test_causal_lm_shifts_labels_internally(make_config) -> None:
    torch.manual_seed(0)
    model = CausalLanguageModel(make_config()).eval()
    ids = torch.randint(2, 32, (2, 8))
    out = model(ids, labels=ids)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, 32), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_classifier_loads_pretrained_encoder_by_name(make_config) -> None:
    config = make_config()
    mlm, classifier = MaskedLanguageModel(config), SequenceClassifier(config, num_labels=2)
    result = classifier.load_state_dict(mlm.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"]
    assert result.unexpected_keys == ["lm_head.weight"]
    torch.testing.assert_close(
        classifier.encoder.layers[1].ffn.w_2.weight, mlm.encoder.layers[1].ffn.w_2.weight
    )


def test_classifier_pooling_reads_real_tokens_only(make_config) -> None:
    hidden = torch.tensor([[[1.0, -4.0], [3.0, 0.0], [9.0, 9.0]]])  # (1, 3, 2); position 2: padding
    mask = torch.tensor([[1, 1, 0]])
    pooled = {
        pooling: SequenceClassifier(make_config(), num_labels=2, pooling=pooling).pool(hidden, mask)
        for pooling in ("mean", "max", "mean_max", "cls")
    }
    torch.testing.assert_close(pooled["mean"], torch.tensor([[2.0, -2.0]]))
    torch.testing.assert_close(pooled["max"], torch.tensor([[3.0, 0.0]]))
    torch.testing.assert_close(pooled["mean_max"], torch.tensor([[2.0, -2.0, 3.0, 0.0]]))
    torch.testing.assert_close(pooled["cls"], torch.tensor([[1.0, -4.0]]))
    config = make_config()
    head = SequenceClassifier(config, num_labels=2, pooling="mean_max").head
    assert head.in_features == 2 * config.d_model
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(config, num_labels=2, pooling="sum")


def _overfit(model: nn.Module, loss_fn: Callable[[], torch.Tensor], steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    return loss_fn().item()


@pytest.mark.parametrize("kind", KINDS)
def test_overfits_one_batch(make_config, kind: str) -> None:
    torch.manual_seed(0)
    model = _build(kind, make_config())
    ids = torch.randint(2, 32, (4, 10))
    ids[:, 0] = torch.tensor([2, 3, 4, 5])  # distinct rows: every target is predictable
    mask = torch.ones_like(ids)
    mask[3, 6:] = 0
    if kind == "mlm":
        labels = torch.full_like(ids, -100)
        labels[:, [1, 3, 5]] = ids[:, [1, 3, 5]]
        inputs = ids.masked_fill(labels != -100, 1)
        loss_fn = lambda: model(inputs, mask, labels).loss  # noqa: E731
    elif kind == "causal":
        loss_fn = lambda: model(ids, mask, ids.masked_fill(mask == 0, -100)).loss  # noqa: E731
    elif kind == "classifier":
        loss_fn = lambda: model(ids, mask, torch.tensor([0, 2, 1, 2])).loss  # noqa: E731
    else:
        target = torch.cat([torch.ones(4, 1, dtype=torch.long), ids.flip(1)], dim=1)  # BOS = 1
        labels = torch.cat([ids.flip(1), torch.zeros(4, 1, dtype=torch.long)], dim=1)
        loss_fn = lambda: model(ids, target[:, :-1], labels=labels[:, :-1]).loss  # noqa: E731
    assert _overfit(model, loss_fn, steps=100) < 0.02
