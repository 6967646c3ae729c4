"""Where and at what precision an encoder runs: the allowed precisions and the device choice."""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "resolve_device"]

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when present, else CPU. Asking for CUDA on a machine without it is an error."""
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available on this machine; use "
                         "device='cpu' (or leave it unset to pick CUDA when present)")
    return dev
