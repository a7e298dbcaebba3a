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


FINER = 4  # a mask pixel looks at a FINER x FINER block of the level this many times finer
STRIP_PX = 16 * 1024 * 1024  # finer-level pixels read per strip (bounded memory on any slide)


def foreground_mask(pyramid, level=None, bright_background=None) -> tuple[np.ndarray, int]:
    """Tissue mask at a coarse level, sensitive enough for sparse cells.

    The threshold is Otsu's, on the channel-mean at the mask level (the tissue/glass split of the whole
    slide). A mask pixel is tissue when *any* pixel of the level ``FINER`` times finer under it is on the
    tissue side of that threshold (darker for brightfield, brighter for fluorescence): one or two cells in
    a field of glass are averaged away at the mask level, but not at the finer one. The finer level is read
    in strips of at most ``STRIP_PX`` pixels.

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
    finer = _finer_level(level)
    if finer < level:
        mask |= _any_finer(pyramid, level, finer, shape, t, bright)
    return mask & valid, level


def _finer_level(level: int) -> int:
    """The factor ``FINER`` times finer than ``level`` that divides it (1 at most)."""
    finer = max(1, level // FINER)
    while level % finer:
        finer -= 1
    return finer


def _any_finer(pyramid, level: int, finer: int, shape, t: float, bright: bool) -> np.ndarray:
    """``(H_l, W_l)`` bool: some pixel of level ``finer`` under each mask pixel is on the tissue side of ``t``."""
    r = level // finer
    out = np.zeros(shape, bool)
    step = max(1, STRIP_PX // (r * r * shape[1]))  # mask rows per strip
    for y0 in range(0, shape[0], step):
        rows = min(step, shape[0] - y0)
        img, valid = pyramid.read_window(finer, (y0 * level, 0), (rows * r, shape[1] * r))
        grey = img.mean(axis=0)
        tissue = ((grey < t) if bright else (grey > t)) & valid
        out[y0:y0 + rows] = tissue.reshape(rows, r, shape[1], r).any(axis=(1, 3))
    return out
