"""Foreground (tissue) mask at a coarse level, so crop plans can skip empty background tiles."""

from __future__ import annotations

import numpy as np

# the automatic level is the coarsest one whose smaller side still has at least this many pixels
MIN_MASK_SIDE = 64


def _auto_level(pyramid) -> int:
    best = 1
    for f in pyramid.level_factors:
        if min(pyramid.shape[-2:]) // f >= MIN_MASK_SIDE:
            best = max(best, int(f))
    return best


def foreground_mask(pyramid, level=None, bright_background=None) -> tuple[np.ndarray, int]:
    """Otsu threshold of the channel-mean at a coarse level.

    level: downsample factor to compute the mask at (default: the coarsest level with a side >= 64 px).
    bright_background: True for brightfield (tissue darker than glass), False for fluorescence; by
        default True for RGB images, False otherwise.
    Returns ``(mask (H_l, W_l) bool, level)``; pixel ``k`` covers world ``[k*level, (k+1)*level)``.
    """
    from skimage.filters import threshold_otsu

    if pyramid.spatial_ndim != 2:
        raise ValueError("the foreground mask is computed for 2-D slides; this image is 3-D.")
    level = _auto_level(pyramid) if level is None else int(level)
    if level < 1:
        raise ValueError(f"mask level {level} must be a downsample factor >= 1.")
    shape = tuple(max(1, n // level) for n in pyramid.shape)
    img, valid = pyramid.read_window(level, (0, 0), shape)
    grey = img.mean(axis=0)
    if np.isnan(grey).any():
        raise ValueError("the image contains NaN values; replace them (e.g. with 0) before masking.")
    values = grey[valid]
    if values.size == 0 or values.min() == values.max():
        return valid.copy(), level  # a flat image has no background to separate
    t = threshold_otsu(values)
    bright = pyramid.rgb if bright_background is None else bright_background
    mask = (grey < t) if bright else (grey > t)
    return mask & valid, level
