"""Training throughput measured by the training loop itself: real tokens per second and, on GPUs
whose peak is known, model FLOPs utilisation (MFU).

Only real tokens count (attention-mask ones; padding is work but not progress). FLOPs per token
follow PaLM (Chowdhery et al., 2022, appendix B): 6·N for the forward and backward matmuls of N
parameters, plus 12·d_model·T per attention module for the scores and the weighted sum over T
keys. MFU counts the real tokens' FLOPs only, so padding lowers it, as it should.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from transformer_pl.model import MultiHeadAttention

_COMPUTE_DTYPES = {
    "bf16-mixed": torch.bfloat16,
    "bf16-true": torch.bfloat16,
    "16-mixed": torch.float16,
    "16-true": torch.float16,
}


def real_tokens(batch: Mapping[str, Tensor]) -> int:
    """Tokens that are not padding: the sum of the batch's masks (`attention_mask`, or
    `source_mask` + `target_mask` for sequence-to-sequence)."""
    return int(sum(int(value.sum()) for key, value in batch.items() if key.endswith("mask")))


def sequence_length(batch: Mapping[str, Tensor]) -> int:
    """Longest padded sequence in the batch: the number of keys each query attends over."""
    return max(value.size(-1) for key, value in batch.items() if key.endswith("mask"))


def training_flops_per_token(n_parameters: int, attention_width: int, sequence_length: int) -> int:
    """attention_width: d_model summed over the model's attention modules."""
    return 6 * n_parameters + 12 * attention_width * sequence_length


class TokenThroughput(Callback):
    """Logs per training step, averaged over the last `window` batches:

    - `train/tokens_per_sec`: real tokens per second, over all devices (the per-device rate
      times the world size);
    - `train/tokens`: real tokens trained on so far (kept in checkpoints, so it survives resume);
    - `train/mfu`: achieved FLOPs over the device's peak, when Lightning knows the peak (CUDA).

    The clock restarts after each validation, so evaluation time is not counted.
    """

    def __init__(self, window: int = 20) -> None:
        self.tokens_seen = 0
        self._recent: deque[tuple[float, int, int]] = deque(maxlen=window)  # seconds, tokens, FLOPs
        self._clock = 0.0
        self._peak_flops: int | None = None
        self._n_parameters = 0
        self._attention_width = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dtype = _COMPUTE_DTYPES.get(str(trainer.precision), torch.float32)
        self._peak_flops = get_available_flops(trainer.strategy.root_device, dtype)
        self._n_parameters = sum(p.numel() for p in pl_module.parameters())
        self._attention_width = sum(
            m.n_heads * m.d_k for m in pl_module.modules() if isinstance(m, MultiHeadAttention)
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._recent.clear()
        self._clock = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._clock = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Mapping[str, Tensor],
        batch_idx: int,
    ) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # CUDA runs asynchronously: wait, or the clock lies
        now = time.perf_counter()
        elapsed, self._clock = now - self._clock, now
        tokens = real_tokens(batch)
        self.tokens_seen += tokens
        flops = tokens * training_flops_per_token(
            self._n_parameters, self._attention_width, sequence_length(batch)
        )
        self._recent.append((elapsed, tokens, flops))

        seconds = sum(entry[0] for entry in self._recent)
        device_tokens_per_sec = sum(entry[1] for entry in self._recent) / seconds
        pl_module.log("train/tokens_per_sec", device_tokens_per_sec * trainer.world_size)
        pl_module.log("train/tokens", float(self.tokens_seen * trainer.world_size))
        if self._peak_flops:
            device_flops_per_sec = sum(entry[2] for entry in self._recent) / seconds
            pl_module.log("train/mfu", device_flops_per_sec / self._peak_flops)

    def state_dict(self) -> dict[str, Any]:
        return {"tokens_seen": self.tokens_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tokens_seen = state_dict["tokens_seen"]
