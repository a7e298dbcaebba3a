"""Precision, thread and cancel helpers shared by the training loops (the device comes from `engine.device`)."""

from __future__ import annotations

import contextlib
import os

import torch


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on CUDA (``precision`` "auto"/"bf16"), nothing elsewhere or with "fp32"."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def limit_threads(num_threads: int | None) -> None:
    """Cap torch CPU threads (the napari GUI and other jobs share the cores)."""
    if num_threads is None:
        num_threads = int(os.environ.get("NAPARI_MUVIT_THREADS", "0")) or None
    if num_threads:
        torch.set_num_threads(int(num_threads))


def check_cancel(cancel) -> bool:
    return bool(cancel is not None and cancel())
