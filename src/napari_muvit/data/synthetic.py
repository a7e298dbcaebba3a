"""Synthetic multi-scale slides: identical small cells whose class is set by large-scale context.

Every pixel is a pure function of ``(seed, y, x)`` (hash-based randomness, no sequential RNG), so
any window can be rendered on its own: a 50k x 50k slide is written chunk by chunk in bounded memory
and the in-memory sample equals the same window of the written slide.

Layout (world px, defaults):
- *regions*: a Voronoi tessellation of jittered seeds on a ``region_size`` grid; each seed draws a
  region type ``1..K``.
- *cells*: one identical bright blob (radius ``CELL_RADIUS``) with probability ``CELL_PROB`` per
  ``CELL_GRID`` cell, everywhere; its class = the region type under the cell centre, class 0
  ("background") elsewhere.
- *context structures*: at most one large structure per ``STRUCT_GRID`` cell (centres 180-460 px
  apart), drawn only inside its own region type: 1 = bright discs and 2 = dark discs (48-88 px wide),
  3 = rings: larger dark discs (128-176 px wide) with a 16 px bright rim. Between structures every
  region is the same flat noisy background, and cells look the same everywhere.
The structures are big enough to survive 16x area averaging (3-5 px bright or dark blobs and 8-11 px
dark-centred rings at level 16, where a 64 px crop spans 1024 world px and holds several), yet sparse:
a 64 px crop at level 1 around a cell usually shows none at all, so it cannot tell the cell's class.
(Generator version 3 drew the rings as small as the discs, with a 12 px rim: at level 16 they were
blobs whose rim and centre nearly cancelled, and models confused them with the bright discs.)

Labels follow the project's one convention (``docs/outputs.md``): label value ``k + 1`` is class ``k``
(``class_names()[k]``), so background pixels are 1, a cell of region type ``t`` is ``t + 1``, and 0
(unlabelled) occurs only where a slide has no labels at all (kind ``noise``).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .synthetic_bearing import CLASS_COLORS as BEARING_COLORS
from .synthetic_bearing import CLASS_NAMES as BEARING_NAMES
from .synthetic_bearing import render_bearing_window
from .synthetic_writer import write_ome_zarr_slide

CLASS_NAMES = ["background", "bright-disc region", "dark-disc region", "ringed-disc region"]
CLASS_COLORS = [[0, 0, 0, 0], [230, 80, 60, 255], [60, 170, 230, 255], [120, 200, 80, 255]]
KINDS = ("regions", "bearing", "noise")  # "bearing": position is the cue (synthetic_bearing.py)
# bumped whenever the same seed renders different pixels or labels (2: disc context; 3: label value k + 1 =
# class k, background 1; stores of versions 1-2 are recognised by data/label_store.py)
GENERATOR_VERSION = 4

REGION_SIZE = 1536
CELL_GRID = 32
CELL_RADIUS = 5
CELL_PROB = 0.5
STRUCT_GRID = 320
STRUCT_MARGIN = 90  # structure centres stay this far from their grid cell's border, so none touch
BACKGROUND, NOISE, CELL_PEAK = 60.0, 18.0, 150.0
BRIGHT, DARK = 60.0, 40.0  # disc intensity above / below the background (grey levels)
DISC_R = (24.0, 44.0)  # bright / dark disc radius range (world px): 48-88 px wide, 3-5 px at level 16
RING_R = (64.0, 88.0)  # ring radius range (world px): 128-176 px wide, 8-11 px at level 16
RIM = 16.0  # bright rim thickness of the rings (world px)

_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _hash_uniform(seed: int, a, b, salt: int) -> np.ndarray:
    """Uniform [0, 1) float64 from integer arrays ``a, b`` (splitmix64 finaliser), vectorised."""
    with np.errstate(over="ignore"):
        h = (np.asarray(a, dtype=np.int64).astype(np.uint64) * _M1) ^ (
            np.asarray(b, dtype=np.int64).astype(np.uint64) * _M2
        )
        h ^= np.uint64((seed * 1_000_003 + salt * 7919) & 0xFFFFFFFFFFFFFFFF) * _M3
        h ^= h >> np.uint64(30)
        h *= _M2
        h ^= h >> np.uint64(27)
        h *= _M3
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _region_seeds(cy, cx, seed: int, n_types: int, region_size: int):
    """World position ``(sy, sx)`` and type ``1..n_types`` of the jittered seed of region grid cells ``(cy, cx)``."""
    sy = (cy + 0.1 + 0.8 * _hash_uniform(seed, cy, cx, 1)) * region_size
    sx = (cx + 0.1 + 0.8 * _hash_uniform(seed, cy, cx, 2)) * region_size
    types = 1 + np.minimum((_hash_uniform(seed, cy, cx, 3) * n_types).astype(np.int64), n_types - 1)
    return sy, sx, types


def region_type(y, x, seed: int, n_types: int = 3, region_size: int = REGION_SIZE) -> np.ndarray:
    """Region type (1..n_types) at world points ``y, x`` (arrays): the type of the nearest jittered seed."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    gy, gx = np.floor(y / region_size).astype(np.int64), np.floor(x / region_size).astype(np.int64)
    best = np.full(y.shape, np.inf)
    kind = np.zeros(y.shape, dtype=np.uint8)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            sy, sx, t = _region_seeds(gy + dy, gx + dx, seed, n_types, region_size)
            d = (y - sy) ** 2 + (x - sx) ** 2
            closer = d < best
            best = np.where(closer, d, best)
            kind = np.where(closer, t, kind).astype(np.uint8)
    return kind


def _region_map(y0: int, x0: int, shape, seed: int, n_types: int, region_size: int) -> np.ndarray:
    """Region type of every pixel of a window: nearest of the few seeds that can reach it."""
    h, w = shape
    gy = np.arange(y0 // region_size - 1, (y0 + h - 1) // region_size + 2)
    gx = np.arange(x0 // region_size - 1, (x0 + w - 1) // region_size + 2)
    cy, cx = (a.ravel() for a in np.meshgrid(gy, gx, indexing="ij"))
    sy, sx, types = _region_seeds(cy, cx, seed, n_types, region_size)
    yy = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
    xx = np.arange(x0, x0 + w, dtype=np.float32)[None, :]
    best = np.full((h, w), np.inf, np.float32)
    kind = np.zeros((h, w), np.uint8)
    for k in range(len(sy)):
        d = (yy - np.float32(sy[k])) ** 2 + (xx - np.float32(sx[k])) ** 2
        closer = d < best
        best[closer] = d[closer]
        kind[closer] = types[k]
    return kind


def _structure_profile(stype: int, r: np.ndarray, radius: float) -> np.ndarray:
    """Intensity added at distance ``r`` (world px) from a structure's centre, for region type ``stype``."""
    inside = r <= radius
    if stype == 1:  # bright disc
        return np.where(inside, BRIGHT, 0.0)
    if stype == 2:  # dark disc
        return np.where(inside, -DARK, 0.0)
    # ring: dark disc with a thick bright rim
    return np.where(inside, np.where(r >= radius - RIM, BRIGHT, -DARK), 0.0)


def _draw_structures(img, regions, y0: int, x0: int, seed: int, n_types: int, region_size: int) -> None:
    """Add the context structures overlapping the window (in place), each only inside its region type."""
    h, w = img.shape
    reach = int(np.ceil(max(DISC_R[1], RING_R[1]))) + 1
    span = STRUCT_GRID - 2 * STRUCT_MARGIN
    for gy in range((y0 - reach) // STRUCT_GRID, (y0 + h - 1 + reach) // STRUCT_GRID + 1):
        for gx in range((x0 - reach) // STRUCT_GRID, (x0 + w - 1 + reach) // STRUCT_GRID + 1):
            cy = gy * STRUCT_GRID + STRUCT_MARGIN + float(_hash_uniform(seed, gy, gx, 11)) * span
            cx = gx * STRUCT_GRID + STRUCT_MARGIN + float(_hash_uniform(seed, gy, gx, 12)) * span
            stype = int(region_type(cy, cx, seed, n_types, region_size))
            # higher region types have no look of their own beyond the first three: reuse them cyclically
            look = 1 + (stype - 1) % 3
            r0, r1 = RING_R if look == 3 else DISC_R
            radius = r0 + float(_hash_uniform(seed, gy, gx, 14)) * (r1 - r0)
            by0, by1 = max(y0, int(cy) - reach), min(y0 + h, int(cy) + reach + 1)
            bx0, bx1 = max(x0, int(cx) - reach), min(x0 + w, int(cx) + reach + 1)
            if by1 <= by0 or bx1 <= bx0:
                continue
            dy = np.arange(by0, by1, dtype=np.float64)[:, None] - cy
            dx = np.arange(bx0, bx1, dtype=np.float64)[None, :] - cx
            add = _structure_profile(look, np.hypot(dy, dx), radius).astype(np.float32)
            sub = (slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0))
            img[sub] += add * (regions[sub] == stype)


def render_window(y0: int, x0: int, shape: tuple[int, int], seed: int, kind: str = "regions",
                  n_types: int = 3, region_size: int = REGION_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(H, W) uint8`` and labels ``(H, W) uint8`` of the world window starting at ``(y0, x0)``.

    Labels: value ``k + 1`` = class ``k`` (1 = background, ``t + 1`` = a cell of region type ``t``); kind
    ``noise`` has no labels (all 0 = unlabelled).
    """
    if kind not in KINDS:
        raise ValueError(f"synthetic slide kind {kind!r} is unknown; use one of {', '.join(KINDS)}.")
    h, w = shape
    yy = np.arange(y0, y0 + h, dtype=np.int64)[:, None]
    xx = np.arange(x0, x0 + w, dtype=np.int64)[None, :]
    noise = _hash_uniform(seed, yy, xx, 99).astype(np.float32)
    if kind == "noise":  # cheap benchmark image: hashed noise, no labels
        return (noise * 255).astype(np.uint8), np.zeros((h, w), np.uint8)
    if kind == "bearing":
        return render_bearing_window(y0, x0, shape, seed, hash_uniform=_hash_uniform, cell_grid=CELL_GRID,
                                     cell_radius=CELL_RADIUS, cell_prob=CELL_PROB)
    regions = _region_map(y0, x0, shape, seed, n_types, region_size)
    img = BACKGROUND + NOISE * (noise - 0.5) * 2
    _draw_structures(img, regions, y0, x0, seed, n_types, region_size)
    # cells: at most one per CELL_GRID cell, kept off the grid borders so each pixel checks one cell
    gy = np.arange(y0 // CELL_GRID, (y0 + h - 1) // CELL_GRID + 1)[:, None]
    gx = np.arange(x0 // CELL_GRID, (x0 + w - 1) // CELL_GRID + 1)[None, :]
    jitter = CELL_GRID - 2 * (CELL_RADIUS + 1)
    ccy = gy * CELL_GRID + CELL_RADIUS + 1 + np.floor(_hash_uniform(seed, gy, gx, 21) * jitter)
    ccx = gx * CELL_GRID + CELL_RADIUS + 1 + np.floor(_hash_uniform(seed, gy, gx, 22) * jitter)
    present = _hash_uniform(seed, gy, gx, 23) < CELL_PROB
    cell_type = np.where(present, region_type(ccy, ccx, seed, n_types, region_size), 0)
    iy = (yy // CELL_GRID - gy[0, 0]).astype(np.intp)
    ix = (xx // CELL_GRID - gx[0, 0]).astype(np.intp)
    d2 = (yy - ccy[iy, ix]) ** 2 + (xx - ccx[iy, ix]) ** 2
    ctype = cell_type[iy, ix]
    inside = (ctype > 0) & (d2 <= CELL_RADIUS**2)
    img += np.where(inside, CELL_PEAK * (1.0 - 0.5 * d2 / CELL_RADIUS**2), 0.0).astype(np.float32)
    labels = np.where(inside, ctype + 1, 1).astype(np.uint8)  # value k + 1 = class k; background = class 0
    return np.clip(img, 0, 255).astype(np.uint8), labels


def synthetic_slide(size: int = 2048, seed: int = 0, kind: str = "regions", n_types: int = 3,
                    region_size: int = REGION_SIZE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """In-memory slide: ``(image (size, size) uint8, labels (size, size) uint8, class_names)``; label value
    ``k + 1`` is ``class_names[k]`` (1 = background), 0 = unlabelled."""
    size = _check_size(size)
    image = np.zeros((size, size), np.uint8)
    labels = np.zeros((size, size), np.uint8)
    step = 1024  # bounded temporaries whatever the size
    for y in range(0, size, step):
        for x in range(0, size, step):
            h, w = min(step, size - y), min(step, size - x)
            image[y:y + h, x:x + w], labels[y:y + h, x:x + w] = render_window(
                y, x, (h, w), seed, kind, n_types, region_size)
    return image, labels, class_names(n_types, kind)


def class_names(n_types: int = 3, kind: str = "regions") -> list[str]:
    """Class names by class index ``k`` (label value ``k + 1``; class 0 = background) of a slide of ``kind``."""
    if kind == "bearing":
        return list(BEARING_NAMES)
    if n_types <= 3:
        return CLASS_NAMES[: n_types + 1]
    return CLASS_NAMES + [f"region type {k}" for k in range(4, n_types + 1)]


def class_colors(kind: str = "regions", n_classes: int | None = None) -> list[list[int]]:
    """0-255 RGBA colour of every class ``k`` (label value ``k + 1``) of a slide of ``kind``: background
    transparent; ``n_classes`` beyond the palette reuse the region colours cyclically."""
    if kind == "bearing":
        palette = [list(c) for c in BEARING_COLORS]
    else:
        palette = [list(c) for c in CLASS_COLORS]
    n = len(palette) if n_classes is None else int(n_classes)
    return [palette[k] if k < len(palette) else palette[1 + (k - 1) % (len(palette) - 1)] for k in range(n)]


def _check_size(size) -> int:
    if int(size) != size or size < 64:
        raise ValueError(f"slide size {size!r} must be a whole number of pixels >= 64, e.g. 4096.")
    return int(size)


def write_synthetic_slide(path, size: int, seed: int = 0, kind: str = "regions", chunk: int = 1024,
                          n_types: int = 3, region_size: int = REGION_SIZE, overwrite: bool = False,
                          progress=None):
    """Write an OME-Zarr v0.5 slide with image and ``labels/ground_truth`` pyramids; returns the path."""
    if kind not in KINDS:
        raise ValueError(f"synthetic slide kind {kind!r} is unknown; use one of {', '.join(KINDS)}.")
    size = _check_size(size)
    names = class_names(n_types, kind)
    generator = {"kind": kind, "seed": int(seed), "size": int(size), "n_types": int(n_types),
                 "region_size": int(region_size), "class_names": names,
                 "generator": "napari_muvit.data.synthetic", "generator_version": GENERATOR_VERSION}
    render = partial(render_window, seed=seed, kind=kind, n_types=n_types, region_size=region_size)
    return write_ome_zarr_slide(
        path, size, render=render, names=names, colors=class_colors(kind, len(names)), generator=generator,
        chunk=chunk, overwrite=overwrite, progress=progress,
    )
