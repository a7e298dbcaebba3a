"""Augmentations that keep the world geometry consistent across levels.

A flip or a 90 degree rotation is a rigid map of the *world* around the centre of the finest crop; every
level's pixels are moved by that map and every level's bbox ``(L, 2, 2)`` (world px, first/last pixel
centres) is replaced by the mapped box, so a physical spot keeps the same world coordinate at all levels
(what MuViT's RoPE needs) and the label crop moves with the finest level.
"""

from __future__ import annotations

import numpy as np


def flip_x(img: np.ndarray, bbox: np.ndarray, center: np.ndarray, *extra: np.ndarray):
    """Mirror x about ``center[1]``. ``img (L, C, S, S)``, ``bbox (L, 2, 2)``, extras ``(..., S, S)``."""
    out = bbox.copy()
    out[:, 0, 1] = 2 * center[1] - bbox[:, 1, 1]
    out[:, 1, 1] = 2 * center[1] - bbox[:, 0, 1]
    return (img[..., ::-1], out, *(e[..., ::-1] for e in extra))


def rot90(img: np.ndarray, bbox: np.ndarray, center: np.ndarray, *extra: np.ndarray):
    """Rotate by 90 degrees counter-clockwise (``np.rot90`` on the last two axes) about ``center``.

    Array: ``out[i, j] = in[j, W-1-i]``; world: ``y' = cy - (x - cx)``, ``x' = cx + (y - cy)``.
    """
    cy, cx = center
    out = np.empty_like(bbox)
    out[:, 0, 0] = cy - (bbox[:, 1, 1] - cx)
    out[:, 1, 0] = cy - (bbox[:, 0, 1] - cx)
    out[:, 0, 1] = cx + (bbox[:, 0, 0] - cy)
    out[:, 1, 1] = cx + (bbox[:, 1, 0] - cy)
    return (np.rot90(img, 1, axes=(-2, -1)), out, *(np.rot90(e, 1, axes=(-2, -1)) for e in extra))


def dihedral(img: np.ndarray, bbox: np.ndarray, k: int, flip: bool, *extra: np.ndarray):
    """Apply an optional x-flip then ``k`` quarter turns to all levels, their bboxes and ``extra`` arrays.

    Returns ``(img, bbox, *extra)`` as contiguous arrays; the finest crop keeps its world centre.
    """
    center = bbox[0].mean(axis=0)
    out = (img, bbox, *extra)
    if flip:
        out = flip_x(out[0], out[1], center, *out[2:])
    for _ in range(k % 4):
        out = rot90(out[0], out[1], center, *out[2:])
    return tuple(np.ascontiguousarray(a) for a in out)


def intensity_jitter(img: np.ndarray, rng: np.random.Generator, scale: float = 0.1, shift: float = 0.1):
    """Same random per-channel gain ``U(1-scale, 1+scale)`` and offset ``U(-shift, shift)`` at every level.

    ``img (L, C, S, S)`` normalised float32.
    """
    c = img.shape[1]
    gain = rng.uniform(1 - scale, 1 + scale, size=(1, c, 1, 1)).astype(np.float32)
    offset = rng.uniform(-shift, shift, size=(1, c, 1, 1)).astype(np.float32)
    return img * gain + offset


class Augmenter:
    """Random dihedral transform (+ intensity jitter) drawn from the sampler's numpy generator.

    Drawing from the sampler's generator keeps one RNG state to checkpoint for exact resumption.
    """

    def __init__(self, flips: bool = True, rotations: bool = True, jitter: float = 0.1):
        self.flips, self.rotations, self.jitter = flips, rotations, jitter

    def __call__(self, rng: np.random.Generator, img: np.ndarray, bbox: np.ndarray, *extra: np.ndarray):
        k = int(rng.integers(4)) if self.rotations else 0
        flip = bool(rng.integers(2)) if self.flips else False
        img, bbox, *extra = dihedral(img, bbox, k, flip, *extra)
        if self.jitter > 0:
            img = intensity_jitter(img, rng, self.jitter, self.jitter)
        return (img.astype(np.float32, copy=False), bbox, *extra)
