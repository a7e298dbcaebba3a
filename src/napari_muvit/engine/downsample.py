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


def downsample_mean_uint8(a: np.ndarray) -> np.ndarray:
    """2x2 block mean of uint8 values rounded half to even, back to uint8: exactly ``np.rint`` of the float32
    `downsample_mean` (the sum of four uint8 is exact), in integer arithmetic.

    Each row is read as little-endian uint16 pairs (low byte = even column, high byte = odd column), so the
    four values of a block are unpacked from two contiguous rows with masks and shifts, not strided copies."""
    pairs = np.ascontiguousarray(_pad_even(np.asarray(a))).view("<u2")
    top, bottom = pairs[..., 0::2, :], pairs[..., 1::2, :]
    s = top & 0xFF
    s += top >> 8
    s += bottom & 0xFF
    s += bottom >> 8
    # s / 4 rounded half to even: (s + 1 + ((s >> 2) & 1)) >> 2 (up above a half; at a half to the even quotient)
    odd = s >> 2
    odd &= 1
    s += odd
    s += 1
    s >>= 2
    return s.astype(np.uint8)


def downsample_mode(a: np.ndarray) -> np.ndarray:
    """2x2 block mode of integer labels; ties go to the earliest of (top-left, top-right, bottom-left, bottom-right).

    With four values: the top-left wins when it occurs twice or more (or when all differ), else the top-right
    when it occurs twice or more, else the bottom-left when the bottom pair matches."""
    a0, a1, a2, a3 = _quads(_pad_even(np.asarray(a)))
    out = np.where((a2 == a3), a2, a0)
    out = np.where((a1 == a2) | (a1 == a3), a1, out)
    return np.where((a0 == a1) | (a0 == a2) | (a0 == a3), a0, out)
