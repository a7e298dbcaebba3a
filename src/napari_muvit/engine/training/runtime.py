"""Device, precision and thread choices shared by the training loops."""

from __future__ import annotations

import contextlib
import os

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; anything else is passed to ``torch.device``."""
    if str(device) != "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but no CUDA GPU is available; use 'cpu' or 'auto'.")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
