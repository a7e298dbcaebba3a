"""Small models and slides with known behaviour, for testing code built on the engine (no napari).

* `ConstantSegmenter`: the same logits everywhere -> a constant probability map.
* `PixelSegmenter`: per-pixel logits from the level-1 crop only -> stitching must not change results.
* `RampSegmenter`: logits that ramp across each tile -> exposes seams if blending is wrong.
* `tiny_segmenter()`: a real (random) `MuViTSegmenter`, small enough for CPU tests.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn


def _card(task, levels, crop, names, in_channels=1):
    from napari_muvit.model import ModelCard

    return ModelCard(task=task, levels=tuple(levels), crop_size=crop, in_channels=in_channels,
                     class_names=list(names), normalization={"policy": "none"})


class _Double(nn.Module):
    task = "segmentation"

    def __init__(self, levels=(1, 4), patch=4, crop=32, n_classes=3, in_channels=1):
        super().__init__()
        self.encoder = SimpleNamespace(levels=tuple(levels), patch_size=(patch, patch), in_channels=in_channels,
                                       dim=8, ndim=2)
        self.num_classes = n_classes
        self.card = _card("segmentation", levels, crop, [f"class {k}" for k in range(n_classes)], in_channels)


class ConstantSegmenter(_Double):
    """Logits ``values (K,)`` at every pixel, whatever the input."""

    def __init__(self, values=(0.5, -1.0, 2.0), **kw):
        super().__init__(n_classes=len(values), **kw)
        self.register_buffer("values", torch.tensor(values, dtype=torch.float32))

    def forward(self, x, bbox=None):
        """The same contiguous logits tensor for every batch of one shape, made once: the stand-in for a model
        that costs the host nothing (treat it as read-only)."""
        B, _, _, S, _ = x.shape
        cached = getattr(self, "_logits", None)
        if cached is None or cached.shape != (B, len(self.values), S, S) or cached.device != self.values.device:
            cached = self._logits = self.values[None, :, None, None].expand(B, -1, S, S).contiguous()
        return cached


class PixelSegmenter(_Double):
    """Logit ``k`` = ``w[k] * x_level1 + b[k]`` (channel 0): a purely local model."""

    def __init__(self, w=(2.0, -1.0, 0.5), b=(0.0, 0.3, -0.2), **kw):
        super().__init__(n_classes=len(w), **kw)
        self.register_buffer("w", torch.tensor(w, dtype=torch.float32))
        self.register_buffer("b", torch.tensor(b, dtype=torch.float32))

    def forward(self, x, bbox=None):
        v = x[:, 0, 0]  # (B, S, S) level-1 crop
        return v[:, None] * self.w[None, :, None, None] + self.b[None, :, None, None]


class RampSegmenter(_Double):
    """Two classes; logit of class 1 ramps from 0 to ``slope`` across the tile (x axis)."""

    def __init__(self, slope=4.0, **kw):
        super().__init__(n_classes=2, **kw)
        self.slope = float(slope)

    def forward(self, x, bbox=None):
        B, _, _, S, _ = x.shape
        ramp = torch.linspace(0, self.slope, S, dtype=torch.float32)
        out = torch.zeros(B, 2, S, S)
        out[:, 1] = ramp[None, None, :]
        return out


def tiny_segmenter(levels=(1, 4), patch=4, crop=32, n_classes=3, seed=0, head="unetr"):
    """A real random `MuViTSegmenter` (dim 32, 1 layer) with a card."""
    from napari_muvit.model import MuViTEncoder, MuViTSegmenter

    torch.manual_seed(seed)
    enc = MuViTEncoder(in_channels=1, levels=tuple(levels), patch_size=patch, num_layers=1, dim=32, heads=1)
    model = MuViTSegmenter(enc, n_classes, head=head).eval()
    model.card = _card("segmentation", levels, crop, [f"class {k}" for k in range(n_classes)])
    model.card.normalization = {}
    return model


def random_slide(shape=(256, 256), seed=0) -> np.ndarray:
    """Smooth-ish random float32 image ``shape`` in [0, 1]."""
    rng = np.random.default_rng(seed)
    img = rng.random(shape).astype(np.float32)
    k = np.ones(5, np.float32) / 5
    img = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 0, img)
    img = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, img)
    return img.astype(np.float32)
