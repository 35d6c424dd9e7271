"""AdamW with weight-decay parameter groups, layer-wise learning-rate decay, and a warm-up schedule.

- Weight decay (Loshchilov & Hutter, 2019) applies to weight matrices only: pulling biases,
  LayerNorm gains and embedding tables toward zero regularises nothing useful and hurts.
- Layer-wise learning-rate decay (Clark et al., 2020, ELECTRA; BEiT): when finetuning, layer i of
  an L-layer encoder trains at lr · decay^(L + 1 - (i + 1)), the embeddings at lr · decay^(L + 1)
  and everything above the encoder (final norm, task head) at lr: lower layers hold the most
  general features and should move least.
- The schedule rises linearly over the warm-up steps, then decays to 0 (cosine or linear) at the
  last step. It is a LambdaLR stepped once per optimizer step, so it multiplies each group's own
  learning rate and keeps the layer-wise ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from transformer_pl.model import LearnedPositionalEncoding
from transformer_pl.stage_sections import OptimParams

Schedule = Literal["cosine", "linear", "constant"]

_EMBEDDING_MODULES = (nn.Embedding, LearnedPositionalEncoding)


def no_decay_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the parameters that get no weight decay: every 0-/1-D parameter (biases, norm gains)
    and every embedding table (a tied output projection shares the token embedding's tensor)."""
    ids = {id(p) for p in model.parameters() if p.ndim < 2}
    for module in model.modules():
        if isinstance(module, _EMBEDDING_MODULES):
            ids.update(id(p) for p in module.parameters())
    return ids


def layerwise_lr_scales(stack: nn.Module, decay: float) -> dict[int, float]:
    """Learning-rate multipliers by parameter id for a stack with `.layers` and a final `.norm`
    (the model's Encoder or Decoder); parameters outside the stack are not listed (scale 1).

    Depth 0 is everything below the first layer (token embedding, learned positions), layer i has
    depth i + 1, the final norm depth L + 1; the scale is decay^(L + 1 - depth).
    """
    layers = stack.layers
    top = len(layers) + 1
    depth = {id(p): 0 for p in stack.parameters()}
    for index, layer in enumerate(layers):
        depth.update({id(p): index + 1 for p in layer.parameters()})
    depth.update({id(p): top for p in stack.norm.parameters()})
    return {param_id: decay ** (top - d) for param_id, d in depth.items()}


def parameter_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    lr_scales: dict[int, float] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer groups, one per (decayed or not, learning-rate scale); frozen parameters are left
    out. Each group carries its own `lr` (the schedule multiplies it), its `lr_scale`, and a
    `name` such as "decay", "no_decay" or "decay_x0.25"."""
    no_decay = no_decay_parameter_ids(model)
    lr_scales = lr_scales or {}
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for param in model.parameters():  # shared (tied) tensors are yielded once
        if not param.requires_grad:
            continue
        key = (id(param) not in no_decay, lr_scales.get(id(param), 1.0))
        groups.setdefault(key, []).append(param)
    return [
        {
            "params": params,
            "weight_decay": weight_decay if decayed else 0.0,
            "lr": learning_rate * scale,
            "lr_scale": scale,
            "name": _group_name(decayed, scale),  # LearningRateMonitor logs lr-AdamW/<name>
        }
        for (decayed, scale), params in sorted(groups.items(), key=lambda item: item[0])
    ]


def _group_name(decayed: bool, lr_scale: float) -> str:
    name = "decay" if decayed else "no_decay"
    return name if lr_scale == 1.0 else f"{name}_x{lr_scale:g}"


def warmup_then_decay(
    total_steps: int, warmup_steps: int, schedule: Schedule
) -> Callable[[int], float]:
    """Multiplier of the peak learning rate after `step` optimizer steps (0-based).

    Warm-up: (step + 1) / warmup_steps, so the first update is already non-zero and the peak is
    reached at the last warm-up step. Then cosine, linear (to 0 at `total_steps`) or constant.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}"
        )
    decay_steps = total_steps - warmup_steps

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min((step - warmup_steps) / decay_steps, 1.0)
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def configure_adamw(
    model: nn.Module,
    optim: OptimParams,
    total_steps: int | float,
    lr_scales: dict[int, float] | None = None,
) -> dict[str, Any]:
    """AdamW + warm-up schedule, in the form `LightningModule.configure_optimizers` returns.

    total_steps: optimizer steps of the whole run (`trainer.estimated_stepping_batches`).
    """
    if math.isinf(total_steps):
        raise ValueError(
            "the learning-rate schedule needs a finite run length: set max_steps or max_epochs "
            "with a sized training dataloader"
        )
    total_steps = int(total_steps)
    warmup_steps = min(int(optim.warmup_fraction * total_steps), total_steps - 1)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, optim.learning_rate, optim.weight_decay, lr_scales),
        lr=optim.learning_rate,
        betas=optim.betas,
    )
    scheduler = LambdaLR(optimizer, warmup_then_decay(total_steps, warmup_steps, optim.schedule))
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
    }
