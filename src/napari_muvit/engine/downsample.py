"""2x2 downsampling of output pyramids: mean for probabilities/features, mode for labels.

Both take ``(..., h, w)`` and return ``(..., ceil(h/2), ceil(w/2))``; an odd last row/column is
padded by repeating the edge, so border pixels are not diluted by zeros.
"""

from __future__ import annotations

import numpy as np


def _pad_even(a: np.ndarray) -> np.ndarray:
    ph, pw = a.shape[-2] % 2, a.shape[-1] % 2
    if ph or pw:
        a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)], mode="edge")
    return a


def _quads(a: np.ndarray) -> list[np.ndarray]:
    return [a[..., 0::2, 0::2], a[..., 0::2, 1::2], a[..., 1::2, 0::2], a[..., 1::2, 1::2]]


def downsample_mean(a: np.ndarray) -> np.ndarray:
    """2x2 block mean (float32 for float inputs)."""
    a = _pad_even(np.asarray(a))
    q = _quads(a.astype(np.float32, copy=False))
    return ((q[0] + q[1] + q[2] + q[3]) * 0.25).astype(a.dtype if a.dtype.kind == "f" else np.float32)


def downsample_mode(a: np.ndarray) -> np.ndarray:
    """2x2 block mode of integer labels; ties go to the earliest of (top-left, top-right, bottom-left, bottom-right)."""
    q = _quads(_pad_even(np.asarray(a)))
    counts = [sum((qj == qi).astype(np.uint8) for qj in q) for qi in q]
    best, best_count = q[0].copy(), counts[0]
    for qi, ci in zip(q[1:], counts[1:]):
        take = ci > best_count
        best[take] = qi[take]
        best_count = np.maximum(best_count, ci)
    return best
