"""World coordinates <-> pyramid array indices: the one place that knows the pixel convention.

World coordinates are level-1 (full resolution) pixel units. A pyramid level with downsample
factor ``f`` (a *level*) has pixel ``k`` covering the world interval ``[k*f, (k+1)*f)``; its centre
is at world ``k*f + (f-1)/2``, so level-1 pixel centres sit on integers. A crop's bbox holds the
world coordinates of the centres of its first and last pixel: ``bbox_max - bbox_min = (size-1)*f``,
which is the reference MuViT encoder's own bbox convention.

All functions work per axis and broadcast over numpy arrays; ``f`` may be a scalar or a per-axis
sequence.

**Physical frame (OME-Zarr ``coordinateTransformations``).** A slide with level-1 pixel size ``p`` (per
axis) and slide translation ``T`` (the physical position of the *centre* of level-1 pixel 0, i.e. the
level-0 OME ``translation``; 0 when the file has none) maps world coordinate ``w`` to physical
``T + w * p``. An array whose pixel ``k`` is a level-``f`` pixel whose first pixel starts at world
``origin`` (e.g. the corner of a predicted region) therefore has OME ``scale = f * p`` and
``translation = T + (origin + (f - 1) / 2) * p`` (`ome_transforms`); `read_ome_transforms` is the
inverse direction. napari's layer ``scale``/``translate`` are the same two numbers.
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


def nested_crop_boxes(center, factors, size) -> tuple[np.ndarray, np.ndarray]:
    """First pixel and world bbox of the nested crops (one per level) centred on world ``center``.

    center: ``(ndim,)`` or ``(..., ndim)`` world px (any number of centres at once).
    factors: ``L`` downsample factors, each a scalar or one per axis (e.g. ``(1, 4, 16)``).
    size: crop side in pixels (scalar or per axis), the same at every level.
    Returns ``starts (..., L, ndim) int64`` (`crop_start_index`) and ``bbox (..., L, 2, ndim) float32`` world px
    (`crop_bbox`: centres of the first and last pixel), exactly what `Pyramid.crops` reads.
    """
    center = np.asarray(center, dtype=np.float64)
    ndim = center.shape[-1]
    size_arr = np.broadcast_to(np.asarray(size, dtype=np.int64), (ndim,))
    lead = center.shape[:-1]
    starts = np.empty((*lead, len(factors), ndim), dtype=np.int64)
    bbox = np.empty((*lead, len(factors), 2, ndim), dtype=np.float32)
    for j, f in enumerate(factors):
        f = np.broadcast_to(np.asarray(f, dtype=np.float64), (ndim,))
        start = crop_start_index(center, f, size_arr)
        starts[..., j, :] = start
        bbox[..., j, 0, :] = index_to_world(start.astype(np.float64), f)
        bbox[..., j, 1, :] = index_to_world(start + size_arr.astype(np.float64) - 1.0, f)
    return starts, bbox


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


# ------------------------------------------------------------------------- pixel centres and edges
def pixel_centre(index, f=1, origin=0.0):
    """World coordinate of the centre of pixel ``index`` of an array at factor ``f`` starting at world ``origin``:
    ``origin + index * f + (f - 1) / 2`` (evaluated left to right; ``index`` may be fractional, e.g. a centroid)."""
    f = np.asarray(f, dtype=np.float64)
    return np.asarray(origin, dtype=np.float64) + np.asarray(index, dtype=np.float64) * f + (f - 1.0) / 2.0


def pixel_edges(index, f=1, origin=0.0) -> tuple[np.ndarray, np.ndarray]:
    """World interval ``[lo, hi)`` covered by pixel ``index`` of an array at factor ``f`` starting at ``origin``."""
    f = np.asarray(f, dtype=np.float64)
    lo = np.asarray(origin, dtype=np.float64) + np.asarray(index, dtype=np.float64) * f
    return lo, lo + f


def _half_pixel(f):
    """``(f - 1) / 2``: a Python scalar stays a Python scalar (so a float32 array it is combined with stays
    float32), anything else becomes float64."""
    return (f - 1) / 2 if np.isscalar(f) else (np.asarray(f, dtype=np.float64) - 1.0) / 2.0


def pixel_corner(centre, f):
    """World corner (lower edge) of the level-``f`` pixel centred on world ``centre``: ``centre - (f - 1) / 2``.

    E.g. the outer edge of a crop's first pixel from its bbox: ``pixel_corner(bbox[0], level)``. Keeps the
    dtype of an array ``centre`` when ``f`` is a Python number.
    """
    return np.asarray(centre) - _half_pixel(f)


def corner_centre(corner, f):
    """World centre of the level-``f`` pixel whose lower edge is at world ``corner``: ``corner + (f - 1) / 2``.

    ``f`` may be any positive size in world px per axis (e.g. a token cell of ``level * patch`` px).
    """
    return np.asarray(corner) + _half_pixel(f)


def pixel_range_centre(start, stop):
    """World centre of the level-1 pixels ``[start, stop)`` (half-open, per axis): ``(start + stop - 1) / 2``,
    the midpoint of the centres of the first and the last pixel (e.g. of a region or an owned tile box)."""
    return (np.asarray(start, dtype=np.float64) + stop - 1) / 2


def tile_centres(tile_index, tile_size, origin=0.0):
    """World centre of tile ``tile_index`` (int, per axis; ``(n, ndim)`` arrays broadcast) of a grid of
    ``tile_size`` level-1 px tiles whose tile 0 starts at world ``origin``:
    ``origin + tile_index * tile_size + (tile_size - 1) / 2`` (what `Pyramid.crops` takes as a centre)."""
    return np.asarray(origin, dtype=np.float64) + np.asarray(tile_index) * tile_size + (tile_size - 1) / 2.0


def centre_index_range(lo, hi, f=1, origin=0.0) -> tuple[np.ndarray, np.ndarray]:
    """Half-open index range ``[i0, i1)`` (int64 per axis) of the level-``f`` pixels (array starting at world
    ``origin``) whose centre can lie in the world interval ``[lo, hi]``.

    ``i0 = floor(world_to_index(lo - origin))`` and ``i1 = ceil(world_to_index(hi - origin)) + 1``: every pixel
    with its centre inside is in the range, plus at most one extra pixel at each end (test the centres, e.g.
    with `pixel_centre`, when that matters). Not clipped to an array's shape.
    """
    f = np.asarray(f, dtype=np.float64)
    half = (f - 1.0) / 2.0
    origin = np.asarray(origin, dtype=np.float64)
    i0 = np.floor((np.asarray(lo, dtype=np.float64) - origin - half) / f).astype(np.int64)
    i1 = np.ceil((np.asarray(hi, dtype=np.float64) - origin - half) / f).astype(np.int64) + 1
    return i0, i1


def centre_to_edge_frame(world):
    """World pixel-centre coordinates -> the pixel-edge frame (level-1 pixel ``j`` spans ``[j, j+1)``:
    QuPath and GeoJSON exports). Adds 0.5."""
    return np.asarray(world, dtype=np.float64) + 0.5


def edge_to_centre_frame(coords):
    """Pixel-edge frame (QuPath, GeoJSON) -> world pixel-centre coordinates. Subtracts 0.5."""
    return np.asarray(coords, dtype=np.float64) - 0.5


# --------------------------------------------------------------------- OME coordinateTransformations
def ome_transforms(
    factor,
    pixel_size=None,
    origin_world_yx=(0.0, 0.0),
    translation=(0.0, 0.0),
    channel: bool = False,
) -> list[dict]:
    """OME ``coordinateTransformations`` (v0.4 and v0.5) of an array of level-``factor`` pixels.

    factor: downsample factor of the array's pixels (scalar or per spatial axis).
    pixel_size: physical size of a level-1 pixel per spatial axis (None = 1: the frame is level-1 pixels).
    origin_world_yx: world coordinate (level-1 pixels) where the array's pixel 0 *starts*, e.g. the corner
        ``(y0, x0)`` of a predicted region; ``(0, 0)`` for a whole slide.
    translation: the slide's own translation (`Pyramid.translation`, physical units, centre of level-1
        pixel 0), added unchanged.
    channel: prepend a channel axis (scale 1, translation 0).

    Returns ``[{"type": "scale", ...}, {"type": "translation", ...}]`` with
    ``scale = f * p`` and ``translation = T + (origin + (f - 1) / 2) * p`` per spatial axis.
    """
    origin = np.atleast_1d(np.asarray(origin_world_yx, dtype=np.float64))
    ndim = origin.size
    f = _per_axis(factor, ndim, 1.0)
    p = _per_axis(pixel_size, ndim, 1.0)
    scale = (f * p).tolist()
    trans = level_translation(f, p, origin, translation).tolist()
    if channel:
        scale, trans = [1.0, *scale], [0.0, *trans]
    return [{"type": "scale", "scale": [float(v) for v in scale]},
            {"type": "translation", "translation": [float(v) for v in trans]}]


def level_translation(factor, pixel_size=None, origin_world_yx=(0.0, 0.0), translation=None) -> np.ndarray:
    """Physical position ``(ndim,)`` of the centre of pixel 0 of an array of level-``factor`` pixels:
    ``T + (origin + (f - 1) / 2) * p`` (the OME ``translation`` of `ome_transforms` and napari's layer
    ``translate``). Arguments as in `ome_transforms` (``translation`` None = 0); ``origin_world_yx`` sets the
    number of axes."""
    origin = np.atleast_1d(np.asarray(origin_world_yx, dtype=np.float64))
    ndim = origin.size
    f = _per_axis(factor, ndim, 1.0)
    p = _per_axis(pixel_size, ndim, 1.0)
    t = _per_axis(translation, ndim, 0.0)
    return t + (origin + (f - 1.0) / 2.0) * p


def slide_translation(level_translate, factor, pixel_size=None) -> np.ndarray:
    """Inverse of `level_translation` for a whole-slide level: the slide's own translation ``T`` (physical, per
    axis) from the translation (napari ``translate``) of its level of factor ``factor``:
    ``translate - (f - 1) / 2 * p``."""
    tr = np.atleast_1d(np.asarray(level_translate, dtype=np.float64))
    ndim = tr.size
    f = _per_axis(factor, ndim, 1.0)
    p = _per_axis(pixel_size, ndim, 1.0)
    return tr - (f - 1.0) / 2.0 * p


def _per_axis(value, ndim: int, default: float) -> np.ndarray:
    """A scalar or a per-axis sequence (its last ``ndim`` values) as ``ndim`` floats; None -> default."""
    arr = np.atleast_1d(np.asarray(default if value is None else value, dtype=np.float64))
    return np.full(ndim, arr[0]) if arr.size == 1 else arr[-ndim:].copy()


def _compose(transforms, ndim: int, scale: np.ndarray, trans: np.ndarray, where: str):
    """Apply a list of OME transforms after ``x -> x * scale + trans``."""
    for tr in transforms or []:
        if not isinstance(tr, dict):
            raise ValueError(f"{where} coordinateTransformation {tr!r} is not an object with a 'type'.")
        kind = tr.get("type")
        if kind == "identity":
            continue
        if kind not in ("scale", "translation"):
            raise ValueError(
                f"{where} coordinateTransformation type {kind!r} is not supported; use 'scale' and 'translation'."
            )
        if kind not in tr:
            raise ValueError(
                f"{where} {kind} transformation has no inline {kind!r} values (a 'path' to a binary "
                "transformation is not supported)."
            )
        values = np.asarray(tr[kind], dtype=np.float64)
        if values.shape != (ndim,) or not np.all(np.isfinite(values)):
            raise ValueError(
                f"{where} {kind} {tr[kind]!r} must be {ndim} finite numbers, one per axis."
            )
        if kind == "scale":
            if np.any(values <= 0):
                raise ValueError(f"{where} scale {tr[kind]!r} must be positive on every axis.")
            scale, trans = scale * values, trans * values
        else:
            trans = trans + values
    return scale, trans


def read_ome_transforms(dataset_transforms, global_transforms=None, ndim: int | None = None):
    """Per-axis ``(scale, translation)`` of one OME dataset: pixel ``k`` -> physical ``k * scale + translation``.

    dataset_transforms: the dataset's ``coordinateTransformations`` list (``scale`` then optional
        ``translation``, v0.4/v0.5); global_transforms: the multiscale-wide list, applied after it.
    ndim: number of axes (taken from the first scale when omitted).
    Missing transforms are identity; the returned ``translation`` is the physical position of the centre
    of the dataset's pixel 0. Raises ``ValueError`` naming an unsupported or malformed transformation.
    """
    if ndim is None:
        for tr in list(dataset_transforms or []) + list(global_transforms or []):
            if isinstance(tr, dict) and isinstance(tr.get(tr.get("type")), list):
                ndim = len(tr[tr["type"]])
                break
        else:
            raise ValueError("cannot tell the number of axes from empty coordinateTransformations; pass ndim.")
    scale, trans = np.ones(ndim), np.zeros(ndim)
    scale, trans = _compose(dataset_transforms, ndim, scale, trans, "dataset")
    scale, trans = _compose(global_transforms, ndim, scale, trans, "multiscale")
    return scale, trans


def has_transform(transforms, kind: str) -> bool:
    """Whether a ``coordinateTransformations`` list holds a transformation of ``kind`` ('scale', 'translation')."""
    return any(isinstance(tr, dict) and tr.get("type") == kind for tr in transforms or [])
