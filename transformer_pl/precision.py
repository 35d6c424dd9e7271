"""Which floating-point precision the hardware runs fast, for training and for inference."""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 or AMX: bf16 matrix instructions. Without them bf16 autocast is emulated and
    slower than fp32; with them it trains and predicts faster than fp32 (see bench/RESULTS.md)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def has_native_bf16(device_type: str) -> bool:
    """Whether devices of this type ("cpu", "cuda", …) here run bf16 natively: a CPU with bf16
    instructions, a CUDA GPU that supports bf16."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device_type == "cpu" and cpu_has_native_bf16()


def native_bf16_autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast where `device` runs bf16 natively, a disabled one elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=has_native_bf16(device.type))
