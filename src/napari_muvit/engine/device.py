"""Device, precision, thread and batch-size policy: the one place that decides them for prediction, the
attention probe and training.

* device ``auto``: CUDA, then Apple MPS, then CPU.
* precision ``auto``: bf16 autocast on CUDA (fp16 where the GPU lacks bf16), fp32 elsewhere; ``fp16`` trains
  with loss scaling (:func:`grad_scaler`).
* torch intra-op threads: prediction caps them at ``cores - 1`` so a GUI thread always keeps a core
  (:func:`configure_threads`); training uses an explicit count or ``$NAPARI_MUVIT_THREADS`` and otherwise
  leaves torch's own choice (:func:`limit_threads`). :func:`device_policy` bundles the three decisions.
* batch size ``auto``: the largest power of two that runs on the device; an out-of-memory error during
  the run halves it and the batch is retried, never crashing the run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch


# ---- capability probes (one function each, so tests can fake a machine) ----------------------------
def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def cuda_bf16_supported() -> bool:
    return torch.cuda.is_bf16_supported()


def resolve_device(device: str = "auto") -> torch.device:
    """``auto|cpu|cuda[:N]|mps`` -> a `torch.device` that exists on this machine."""
    name = str(device or "auto")
    if name == "auto":
        if cuda_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind == "cuda" and not cuda_available():
        raise ValueError(f"device {name!r} was requested but no CUDA GPU is available; use 'auto' or 'cpu'.")
    if kind == "mps" and not mps_available():
        raise ValueError(f"device {name!r} was requested but Apple MPS is not available; use 'auto' or 'cpu'.")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not one of auto, cpu, cuda, mps.")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a precision name on a device (``None`` = plain fp32)."""
    precision = precision or "auto"
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if cuda_bf16_supported() else torch.float16
        return None  # CPU autocast is slower than fp32 for these models; MPS autocast is patchy
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise ValueError("precision 'fp16' needs a GPU; on the CPU use 'fp32', 'bf16' or 'auto'.")
        return torch.float16
    raise ValueError(f"precision {precision!r} is not one of auto, fp32, bf16, fp16.")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Context manager: autocast to ``dtype`` on ``device``, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_threads(max_threads: int | None = None, reserve: int = 1) -> int:
    """Cap torch's intra-op threads at ``cores - reserve`` (at least 1) and return the number set.

    Leaving a core free keeps a GUI responsive while the model runs in a worker thread.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, cores - reserve)
    if max_threads is not None:
        n = max(1, min(n, int(max_threads)))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def limit_threads(num_threads: int | None = None) -> int:
    """Training's thread rule: cap torch's intra-op threads at ``num_threads``, else at
    ``$NAPARI_MUVIT_THREADS``; with neither, torch's own count stays. Returns the count in effect."""
    if num_threads is None:
        num_threads = int(os.environ.get("NAPARI_MUVIT_THREADS", "0")) or None
    if num_threads:
        torch.set_num_threads(int(num_threads))
    return torch.get_num_threads()


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaler for a training step: active for fp16 autocast only (bf16 and fp32 need none, and a
    disabled scaler passes the loss, the unscale and the optimiser step through unchanged)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


@dataclass(frozen=True)
class DevicePolicy:
    """Where and how a run computes: ``device``, autocast ``dtype`` (``None`` = fp32) and torch ``threads``."""

    device: torch.device
    dtype: torch.dtype | None
    threads: int

    @property
    def precision(self) -> str:
        """``"bf16"``, ``"fp16"`` or ``"fp32"``: the precision actually used."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    def autocast(self):
        return autocast(self.device, self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return grad_scaler(self.device, self.dtype)


def device_policy(device: str = "auto", precision: str = "auto", threads: int | None = None) -> DevicePolicy:
    """The device, autocast dtype and thread count of a training run (see the module docstring).

    ValueError (one sentence) for a device this machine lacks or a precision it cannot run.
    """
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    return DevicePolicy(device=dev, dtype=dtype, threads=limit_threads(threads))


def is_oom(exc: BaseException) -> bool:
    """True for a device out-of-memory error (CUDA, MPS or CPU allocator)."""
    if isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def auto_batch_size(run_batch, device: torch.device, start: int | None = None, max_batch: int = 256) -> int:
    """Largest batch size ``b`` (a power of two) for which ``run_batch(b)`` succeeds.

    ``run_batch(b)`` runs the model on a dummy batch of ``b`` tiles. On the CPU there is no hard memory
    limit worth probing (bigger batches only add latency), so a fixed 8 is returned without probing.
    On a GPU the size doubles from ``start`` until an out-of-memory error or ``max_batch``.
    """
    if device.type == "cpu":
        return 8 if start is None else int(start)
    b = int(start or 4)
    best = 0
    while b <= max_batch:
        try:
            run_batch(b)
            best = b
            b *= 2
        except Exception as exc:  # noqa: BLE001 - only OOM is expected here
            if not is_oom(exc):
                raise
            free_device_memory(device)
            break
    if best == 0:
        best = 1
    # leave head-room: the probe batch is synthetic and fragmentation grows during a run
    return max(1, best // 2) if best >= 8 else best


def io_threads(device: torch.device) -> int:
    """Reader/writer threads feeding the model: 1 on CPU (the model needs the cores), more beside a GPU."""
    if device.type == "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // 2))
