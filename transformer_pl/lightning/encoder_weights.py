"""Pretrained encoder weights into a task's encoder: an exported masked LM's (or word vectors')
`model.safetensors` holds its encoder as `encoder.*`, with the same structure and names as every
encoder task's `.encoder`, so they load by name."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from safetensors.torch import load_file
from torch import nn

log = logging.getLogger(__name__)

ENCODER_PREFIX = "encoder."
SUMMARY_DEPTH = 3  # "encoder.layers.0": one entry per layer, however many tensors it holds


def summarise_names(names: Sequence[str]) -> str:
    """Parameter names grouped by their first `SUMMARY_DEPTH` parts, for a one-line log:
    ["encoder.layers.0.a.weight", "encoder.layers.0.b.bias", "encoder.norm.weight"] gives
    "encoder.layers.0.* (2), encoder.norm.weight" (a group of one keeps its full name). Word
    vectors leave every encoder weight but the embedding missing: dozens of names in full."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(".".join(name.split(".")[:SUMMARY_DEPTH]), []).append(name)
    return ", ".join(
        members[0] if len(members) == 1 else f"{prefix}.* ({len(members)})"
        for prefix, members in groups.items()
    )


class LoadedKeys(NamedTuple):
    """Full parameter names (`encoder.…`): the task's encoder weights the file did not have
    (they keep their fresh initialisation), and the file's encoder weights the task has no
    place for (ignored)."""

    missing: list[str]
    unexpected: list[str]


def load_encoder_weights(encoder: nn.Module, weights_path: str | Path) -> LoadedKeys:
    """Copy the `encoder.*` tensors of an exported model into `encoder`.

    Other tensors in the file (a masked LM's `lm_head.weight`) are not part of the encoder
    and are skipped; a tensor whose shape differs raises (the configs do not match).
    """
    state = load_file(str(weights_path))
    encoder_state = {
        name.removeprefix(ENCODER_PREFIX): tensor
        for name, tensor in state.items()
        if name.startswith(ENCODER_PREFIX)
    }
    if not encoder_state:
        raise ValueError(f"{weights_path} holds no '{ENCODER_PREFIX}*' weights")
    result = encoder.load_state_dict(encoder_state, strict=False)
    keys = LoadedKeys(
        missing=[ENCODER_PREFIX + name for name in result.missing_keys],
        unexpected=[ENCODER_PREFIX + name for name in result.unexpected_keys],
    )
    log.info(
        "loaded %d encoder tensors from %s",
        len(encoder_state) - len(keys.unexpected),
        weights_path,
    )
    if keys.missing:
        log.warning(
            "%d encoder tensors missing from %s (left at init): %s",
            len(keys.missing),
            weights_path,
            summarise_names(keys.missing),
        )
    if keys.unexpected:
        log.warning(
            "%d unexpected encoder tensors in %s (ignored): %s",
            len(keys.unexpected),
            weights_path,
            summarise_names(keys.unexpected),
        )
    return keys
