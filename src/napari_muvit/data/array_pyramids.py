"""Pyramids from arrays, and the level checks and colour rule every reader shares.

`pyramid_from_array` (one resolution, coarser levels averaged lazily), `pyramid_from_arrays` (levels given,
finest first), axis-letter guessing, level factors from shapes and their checks, and the one
brightfield-RGB rule (`is_brightfield_rgb`). `readers`, `ome_zarr` and `slide_readers` all build on these,
so none of them imports another reader.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from .level_io import SPATIAL, Level
from .pyramid import Pyramid

DEFAULT_MIN_SIZE = 256


def guess_axes(shape: Sequence[int]) -> str:
    """Axis letters for an array of ``shape`` when the caller gave none."""
    nd = len(shape)
    if nd == 2:
        return "yx"
    if nd == 3:
        if shape[-1] in (3, 4) and shape[0] > 4:
            return "yxc"
        return "cyx" if shape[0] <= 8 else "zyx"
    if nd == 4:
        return "czyx"
    raise ValueError(
        f"an image array of shape {tuple(shape)} is not supported; use 2-D (Y, X), RGB (Y, X, 3), "
        "(C, Y, X), (Z, Y, X) or (C, Z, Y, X)."
    )


def _check_axes(axes: str, shape) -> str:
    axes = axes.lower()
    if len(axes) != len(shape) or set(axes) - set("tczyx") or len(set(axes)) != len(axes) or not (
        "y" in axes and "x" in axes
    ):
        raise ValueError(
            f"axes {axes!r} do not describe an array of shape {tuple(shape)}; use letters from 'tczyx' "
            "with y and x, one per dimension."
        )
    return axes


def _is_rgb(axes: str, shape) -> bool:
    """RGB(A) = samples on the last axis (how napari, TIFF and PNG store colour)."""
    return axes.endswith("c") and shape[-1] in (3, 4)


_RGB_NAMES = (("red", "green", "blue"), ("r", "g", "b"))
_RGB_COLORS = ("ff0000", "00ff00", "0000ff")


def _hex_color(value) -> str | None:
    """An OME/omero colour (``"FF0000"``, ``"#ff0000"``, or a signed RGBA int as in OME-XML) as ``rrggbb``."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return f"{(int(value) & 0xFFFFFFFF) >> 8:06x}"
    text = str(value).strip().lstrip("#").lower()
    return text[:6] if len(text) in (6, 8) else None


def is_brightfield_rgb(n_channels: int, dtype, names=None, colors=None) -> bool:
    """Whether separate channels hold a brightfield colour image (one rule for every format).

    True when there are exactly 3 channels of ``uint8`` and the file does not say otherwise: channel
    colours, when given (and not one colour for all, such as a default white), are red, green, blue in
    that order, and channel names, when given and not generic (``channel 0``, ``Channel:0:0``, ``c0``,
    ``C:1``, empty), are red/green/blue or R/G/B. So ome-zarr-py's plain
    RGB (3 uint8 channels, no ``omero``) and a viewer-coloured RGB are RGB, while 3 uint8 fluorescence
    channels named DAPI/GFP/... or coloured otherwise are not. Colour samples stored on their own axis
    (TIFF ``S``, PNG, SVS) are RGB whatever this says.
    """
    if int(n_channels) != 3 or np.dtype(dtype) != np.uint8:
        return False
    hexes = [_hex_color(c) for c in colors or []]
    if any(h is not None for h in hexes) and len(set(hexes)) > 1:  # one colour for all (e.g. white) says nothing
        if tuple(hexes) != _RGB_COLORS:
            return False
    if names:
        lowered = tuple(str(n).strip().lower() for n in names)
        generic = all(re.fullmatch(r"((channel|ch|c)[ :_-]*)?[0-9:]*", n) for n in lowered)
        if not generic and lowered not in _RGB_NAMES:
            return False
    return True


def pyramid_from_array(
    array, *, name="image", axes=None, min_size=DEFAULT_MIN_SIZE, downsample_z=False
) -> Pyramid:
    """A single-resolution array with lazily area-averaged coarser levels (factor 2 steps)."""
    axes = _check_axes(axes or guess_axes(array.shape), array.shape)
    spatial = [a for a in axes if a in SPATIAL]
    sizes = [array.shape[axes.index(a)] for a in spatial]
    if min(sizes) < 1:
        raise ValueError(f"the image of shape {tuple(array.shape)} is empty.")
    levels = [Level(array, axes, (1,) * len(spatial))]
    yx = sizes[-2:]
    f = 1
    while min(n // f for n in yx) >= min_size and min(n // (2 * f) for n in yx) >= 1:
        f *= 2
        factor = tuple(f if (a != "z" or downsample_z) else 1 for a in spatial)
        levels.append(Level(None, axes, factor, source=0))
    return Pyramid(levels, name=name, rgb=_is_rgb(axes, array.shape))


def pyramid_from_arrays(arrays: list, *, name="image", axes=None) -> Pyramid:
    """Levels given as arrays (finest first); factors are the level-0 / level shape ratios."""
    if not arrays:
        raise ValueError("the pyramid has no levels; give at least one image array.")
    shape0 = arrays[0].shape
    axes = _check_axes(axes or guess_axes(shape0), shape0)
    spatial_idx = [i for i, a in enumerate(axes) if a in SPATIAL]
    levels = []
    for k, arr in enumerate(arrays):
        if len(arr.shape) != len(shape0):
            raise ValueError(f"pyramid level {k} has shape {tuple(arr.shape)} but level 0 has {tuple(shape0)}.")
        factor = factors_from_shapes([shape0[i] for i in spatial_idx], [arr.shape[i] for i in spatial_idx], k)
        levels.append(Level(arr, axes, factor))
    check_levels_ascending([lv.factor for lv in levels])
    return Pyramid(levels, name=name, rgb=_is_rgb(axes, shape0))


def factors_from_shapes(shape0: Sequence[int], shape: Sequence[int], level_index: int) -> tuple[int, ...]:
    """Integer downsample factor per spatial axis; every axis must be consistent with rounding."""
    factors = []
    for n0, n in zip(shape0, shape):
        if n < 1:
            raise ValueError(f"pyramid level {level_index} has an empty axis (shape {tuple(shape)}).")
        f = max(1, int(round(n0 / n)))
        # a level of factor f has floor or ceil(n0/f) pixels
        if n not in (n0 // f, math.ceil(n0 / f)):
            raise ValueError(
                f"pyramid level {level_index} of shape {tuple(shape)} is not a whole-number downsampling of "
                f"level 0 {tuple(shape0)}; every level must shrink each axis by an integer factor."
            )
        factors.append(f)
    yx = factors[-2:]
    if yx[0] != yx[1]:
        raise ValueError(
            f"pyramid level {level_index} is downsampled {yx[0]}x in Y but {yx[1]}x in X (shape {tuple(shape)} "
            f"vs level 0 {tuple(shape0)}); levels must keep the aspect ratio."
        )
    return tuple(factors)


def check_levels_ascending(factors: list[tuple[int, ...]]) -> None:
    """Stored levels must start at factor 1 and grow strictly (Y/X) with each level."""
    if any(f != 1 for f in factors[0]):
        raise ValueError(f"the first pyramid level must be full resolution (factor 1), got {factors[0]}.")
    for k in range(1, len(factors)):
        if factors[k][-1] <= factors[k - 1][-1]:
            raise ValueError(
                f"pyramid levels must go from fine to coarse; level {k} has factor {factors[k]} after "
                f"{factors[k - 1]}."
            )
