"""Precision, thread and cancel helpers of the training loops; every decision is `engine.device`'s policy."""

from __future__ import annotations

import torch

from ..device import autocast as _autocast
from ..device import limit_threads, resolve_precision

__all__ = ["autocast", "check_cancel", "limit_threads"]


def autocast(device: torch.device, precision: str = "auto"):
    """Autocast context for ``precision`` on ``device`` as `engine.device.resolve_precision` decides it
    (``auto``: bf16 on CUDA, fp16 where the GPU lacks bf16, fp32 elsewhere)."""
    return _autocast(device, resolve_precision(precision, device))


def check_cancel(cancel) -> bool:
    return bool(cancel is not None and cancel())
