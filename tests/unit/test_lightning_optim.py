"""AdamW parameter groups, layer-wise learning-rate decay and the warm-up schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from transformer_pl.lightning.optim import (
    configure_adamw,
    layerwise_lr_scales,
    no_decay_parameter_ids,
    parameter_groups,
    warmup_then_decay,
)
from transformer_pl.model import MaskedLanguageModel, SequenceClassifier, TransformerConfig
from transformer_pl.stage_sections import OptimParams

CONFIG = TransformerConfig(
    vocab_size=50, d_model=16, n_heads=2, n_layers=3, d_ff=32, max_len=16, positional="learned"
)


def names_of(model: nn.Module, ids: set[int]) -> set[str]:
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_no_decay_on_biases_norms_and_embeddings() -> None:
    model = MaskedLanguageModel(CONFIG)  # tied: lm_head.weight is the token embedding
    no_decay = names_of(model, no_decay_parameter_ids(model))
    decayed = {name for name, _ in model.named_parameters()} - no_decay

    assert "encoder.embedding.weight" in no_decay
    assert "encoder.positional.weight" in no_decay  # learned positions are an embedding too
    assert "encoder.norm.weight" in no_decay and "encoder.norm.bias" in no_decay
    assert "encoder.layers.0.self_attn.q_proj.bias" in no_decay
    assert "encoder.layers.0.ffn_norm.weight" in no_decay
    assert all(name.endswith(".weight") for name in decayed)
    assert "encoder.layers.2.ffn.w_1.weight" in decayed
    assert "encoder.layers.0.self_attn.out_proj.weight" in decayed


def test_groups_cover_each_trainable_parameter_once() -> None:
    model = MaskedLanguageModel(CONFIG)
    model.encoder.layers[0].requires_grad_(False)
    groups = parameter_groups(model, learning_rate=1e-3, weight_decay=0.1)

    grouped = [id(p) for group in groups for p in group["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)  # frozen left out, tied embedding counted once
    assert {(group["name"], group["weight_decay"], group["lr"]) for group in groups} == {
        ("decay", 0.1, 1e-3),
        ("no_decay", 0.0, 1e-3),
    }


def test_layerwise_lr_scales_decay_from_the_head_down() -> None:
    model = SequenceClassifier(CONFIG, num_labels=2)
    decay = 0.5
    scales = layerwise_lr_scales(model.encoder, decay)
    by_name = {name: scales.get(id(p), 1.0) for name, p in model.named_parameters()}

    assert by_name["head.weight"] == 1.0
    assert by_name["encoder.norm.weight"] == 1.0
    assert by_name["encoder.layers.2.ffn.w_1.weight"] == decay
    assert by_name["encoder.layers.1.self_attn.q_proj.bias"] == decay**2
    assert by_name["encoder.layers.0.ffn_norm.bias"] == decay**3
    assert by_name["encoder.embedding.weight"] == decay**4
    assert by_name["encoder.positional.weight"] == decay**4

    groups = parameter_groups(model, learning_rate=1e-3, weight_decay=0.01, lr_scales=scales)
    assert {group["name"] for group in groups} >= {"decay", "decay_x0.5", "no_decay_x0.0625"}
    for group in groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"])
        assert all(scales.get(id(p), 1.0) == group["lr_scale"] for p in group["params"])


def test_warmup_rises_linearly_then_cosine_decays_to_zero() -> None:
    multiplier = warmup_then_decay(total_steps=100, warmup_steps=10, schedule="cosine")
    warmup = [multiplier(step) for step in range(10)]
    assert warmup == pytest.approx([(step + 1) / 10 for step in range(10)])
    assert multiplier(10) == 1.0  # the peak, right after warm-up
    assert multiplier(55) == pytest.approx(0.5)  # half-way through the decay
    decay = [multiplier(step) for step in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert multiplier(99) == pytest.approx(0.0, abs=1e-3)
    assert multiplier(100) == 0.0  # past the end it stays at zero


def test_linear_and_constant_schedules() -> None:
    linear = warmup_then_decay(total_steps=20, warmup_steps=0, schedule="linear")
    assert [linear(step) for step in (0, 10, 20)] == [1.0, 0.5, 0.0]
    constant = warmup_then_decay(total_steps=20, warmup_steps=4, schedule="constant")
    assert [constant(step) for step in (0, 3, 4, 19)] == [0.25, 1.0, 1.0, 1.0]


def test_warmup_must_fit_in_the_run() -> None:
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_then_decay(total_steps=10, warmup_steps=10, schedule="cosine")
    with pytest.raises(ValueError, match="total_steps"):
        warmup_then_decay(total_steps=0, warmup_steps=0, schedule="cosine")


def test_configure_adamw_schedules_every_group_per_optimizer_step() -> None:
    model = SequenceClassifier(CONFIG, num_labels=2)
    optim = OptimParams(learning_rate=1e-3, warmup_fraction=0.1, schedule="cosine")
    configured = configure_adamw(model, optim, total_steps=50, lr_scales={id(model.head.bias): 0.5})
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert configured["lr_scheduler"]["interval"] == "step"
    assert optimizer.defaults["betas"] == optim.betas

    warmup_steps = 5  # 10% of 50
    for group in optimizer.param_groups:
        assert group["initial_lr"] == pytest.approx(1e-3 * group["lr_scale"])  # the peak
        assert group["lr"] == pytest.approx(group["initial_lr"] / warmup_steps)  # first step's
    assert sum(group["lr_scale"] == 0.5 for group in optimizer.param_groups) == 1

    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[warmup_steps - 1] == pytest.approx(max(lrs))
    assert lrs[-1] < 1e-3 * 0.01


def test_configure_adamw_needs_a_finite_run() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="finite run length"):
        configure_adamw(model, OptimParams(), total_steps=math.inf)
