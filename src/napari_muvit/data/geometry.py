"""World coordinates <-> pyramid array indices: the one place that knows the pixel convention.

World coordinates are level-1 (full resolution) pixel units. A pyramid level with downsample
factor ``f`` (a *level*) has pixel ``k`` covering the world interval ``[k*f, (k+1)*f)``; its centre
is at world ``k*f + (f-1)/2``, so level-1 pixel centres sit on integers. A crop's bbox holds the
world coordinates of the centres of its first and last pixel: ``bbox_max - bbox_min = (size-1)*f``,
which is the reference MuViT encoder's own bbox convention.

All functions work per axis and broadcast over numpy arrays; ``f`` may be a scalar or a per-axis
sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def index_to_world(index, f):
    """World coordinate of the centre of pixel ``index`` of a level with factor ``f``."""
    f = np.asarray(f, dtype=np.float64)
    return np.asarray(index, dtype=np.float64) * f + (f - 1.0) / 2.0


def world_to_index(world, f):
    """Fractional pixel index (centre-based) of world coordinate ``world`` at a level of factor ``f``.

    Integer results are pixel centres; ``floor(world_to_index(w, f) + 0.5)`` is the pixel containing ``w``.
    """
    f = np.asarray(f, dtype=np.float64)
    return (np.asarray(world, dtype=np.float64) - (f - 1.0) / 2.0) / f


def crop_start_index(center, f, size):
    """First pixel index (int array) of a ``size``-pixel crop at factor ``f`` centred on world ``center``.

    The exact start ``world_to_index(center, f) - (size-1)/2`` is rounded half-up to an integer, so
    crops of different levels stay nested but may be up to half a pixel of their level off-centre.
    """
    start = world_to_index(center, f) - (np.asarray(size, dtype=np.float64) - 1.0) / 2.0
    # floor(x + 0.5) instead of np.round: no banker's rounding, identical on every platform
    return np.floor(start + 0.5 + 1e-9).astype(np.int64)


def crop_bbox(start_index, f, size) -> np.ndarray:
    """World bbox ``(2, ndim)`` = centres of the first and last pixel of a crop starting at ``start_index``."""
    start = np.atleast_1d(np.asarray(start_index, dtype=np.float64))
    first = index_to_world(start, f)
    last = index_to_world(start + np.asarray(size, dtype=np.float64) - 1.0, f)
    return np.stack([first, last]).astype(np.float32)


def crop_world_extent(start_index, f, size) -> tuple[np.ndarray, np.ndarray]:
    """Half-open world interval ``[lo, hi)`` per axis covered by a crop's pixels."""
    f = np.asarray(f, dtype=np.float64)
    start = np.atleast_1d(np.asarray(start_index, dtype=np.float64))
    return start * f, (start + np.asarray(size, dtype=np.float64)) * f


def validate_levels(levels: Sequence[float]) -> tuple[int, ...]:
    """Check a MuViT level set: positive integers, strictly ascending, each dividing the next.

    Returns the levels as a tuple of ints; raises ``ValueError`` with a readable sentence otherwise.
    """
    try:
        values = [float(v) for v in levels]
    except TypeError as exc:
        raise ValueError(f"levels must be a list of downsample factors such as (1, 4, 16), got {levels!r}.") from exc
    if not values:
        raise ValueError("levels is empty; give at least one downsample factor such as (1,).")
    ints = []
    for v in values:
        if v < 1 or abs(v - round(v)) > 1e-6:
            raise ValueError(f"level {v:g} is not a whole downsample factor >= 1; use e.g. (1, 4, 16).")
        ints.append(int(round(v)))
    for a, b in zip(ints[:-1], ints[1:]):
        if b <= a:
            raise ValueError(f"levels {tuple(ints)} must be strictly ascending, e.g. (1, 4, 16).")
        if b % a:
            raise ValueError(
                f"levels {tuple(ints)} are not nested: {b} is not a multiple of {a}; use factors that "
                "divide each other, e.g. (1, 4, 16) or (1, 8, 32)."
            )
    return tuple(ints)


def validate_crop_size(size: int, patch_size: int | None = None) -> int:
    """Check a crop size (pixels per side) and, if given, that the model's patch size divides it."""
    if int(size) != size or size < 1:
        raise ValueError(f"crop size {size!r} must be a positive whole number of pixels, e.g. 256.")
    size = int(size)
    if patch_size is not None and size % int(patch_size):
        raise ValueError(
            f"crop size {size} is not divisible by the patch size {patch_size}; use a multiple of "
            f"{patch_size}, e.g. {max(1, size // int(patch_size)) * int(patch_size)}."
        )
    return size
