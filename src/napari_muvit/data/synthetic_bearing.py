"""Synthetic slides where *position* is the cue: a cell's class is the side its nearest landmark lies on.

Kind ``"bearing"`` of :func:`napari_muvit.data.synthetic.render_window`. Every pixel is a pure function of
``(seed, y, x)`` like the ``"regions"`` kind, so any window renders on its own.

Layout (world px):
- *landmarks*: one identical large ring-disc (radius ``LANDMARK_R``) per ``LANDMARK_GRID`` cell, its centre
  jittered inside the cell (``LANDMARK_MARGIN`` from the borders). All landmarks look the same.
- *cells*: the same small bright blob as in ``"regions"`` (at most one per ``CELL_GRID`` cell, probability
  ``CELL_PROB``), left out within ``CLEARANCE`` of a landmark centre, so no cell touches a landmark.
- *label* of a cell: the side on which its nearest landmark centre lies, by the dominant axis of the
  offset ``(dy, dx) = landmark - cell``: 1 above (``-dy >= |dx|``), 2 right (``dx > |dy|``),
  3 below (``dy >= |dx|``, ``dy > 0``), 4 left; class 0 (background) elsewhere. Label value = class + 1
  (1 = background), as everywhere in the project.

Nothing about a cell or its surroundings within the fine crop tells its class: a cell is typically
150-450 px from its nearest landmark, outside a 64 px level-1 crop, while a 1024 px level-16 context crop
holds one to four landmarks. Knowing *which* landmarks are in view is not enough; a model must know
*where the cell lies* relative to them, which only the world boxes of its crops tell it when the
context crops are not centred on the cell.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ["background", "landmark above", "landmark right", "landmark below", "landmark left"]
CLASS_COLORS = [[0, 0, 0, 0], [230, 80, 60, 255], [60, 170, 230, 255], [120, 200, 80, 255],
                [240, 200, 40, 255]]

LANDMARK_GRID = 640
LANDMARK_MARGIN = 120  # landmark centres stay this far from their grid cell's border
LANDMARK_R = 48.0
LANDMARK_RIM = 12.0
CLEARANCE = 80.0  # no cell centre closer than this to a landmark centre
BACKGROUND, NOISE, CELL_PEAK, RIM_ADD, CORE_SUB = 60.0, 18.0, 150.0, 70.0, 35.0


def landmark_centres(gy, gx, seed: int, hash_uniform) -> tuple[np.ndarray, np.ndarray]:
    """World centre ``(cy, cx)`` of the landmark of grid cells ``(gy, gx)`` (integer arrays)."""
    span = LANDMARK_GRID - 2 * LANDMARK_MARGIN
    cy = np.asarray(gy) * LANDMARK_GRID + LANDMARK_MARGIN + hash_uniform(seed, gy, gx, 41) * span
    cx = np.asarray(gx) * LANDMARK_GRID + LANDMARK_MARGIN + hash_uniform(seed, gy, gx, 42) * span
    return cy, cx


def nearest_landmark(y, x, seed: int, hash_uniform) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offset ``(dy, dx)`` from world points ``y, x`` to their nearest landmark centre, and its distance."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    gy = np.floor(y / LANDMARK_GRID).astype(np.int64)
    gx = np.floor(x / LANDMARK_GRID).astype(np.int64)
    best = np.full(np.broadcast(y, x).shape, np.inf)
    by = np.zeros_like(best)
    bx = np.zeros_like(best)
    # the margin keeps every landmark within one grid cell, so the 3 x 3 neighbourhood holds the nearest
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            cy, cx = landmark_centres(gy + oy, gx + ox, seed, hash_uniform)
            dy, dx = cy - y, cx - x
            d = dy**2 + dx**2
            closer = d < best
            best = np.where(closer, d, best)
            by = np.where(closer, dy, by)
            bx = np.where(closer, dx, bx)
    return by, bx, np.sqrt(best)


def bearing_class(dy, dx) -> np.ndarray:
    """Class ``1..4`` (above, right, below, left) of the landmark offset ``(dy, dx)`` (world px, y down)."""
    dy, dx = np.asarray(dy), np.asarray(dx)
    return np.select([-dy >= np.abs(dx), dx > np.abs(dy), dy >= np.abs(dx)], [1, 2, 3], 4).astype(np.uint8)


def _draw_landmarks(img, y0: int, x0: int, seed: int, hash_uniform) -> None:
    """Add the landmarks overlapping the window (in place): a dark core with a bright rim, all identical."""
    h, w = img.shape
    reach = int(np.ceil(LANDMARK_R)) + 1
    for gy in range((y0 - reach) // LANDMARK_GRID, (y0 + h - 1 + reach) // LANDMARK_GRID + 1):
        for gx in range((x0 - reach) // LANDMARK_GRID, (x0 + w - 1 + reach) // LANDMARK_GRID + 1):
            cy, cx = (float(v) for v in landmark_centres(gy, gx, seed, hash_uniform))
            by0, by1 = max(y0, int(cy) - reach), min(y0 + h, int(cy) + reach + 1)
            bx0, bx1 = max(x0, int(cx) - reach), min(x0 + w, int(cx) + reach + 1)
            if by1 <= by0 or bx1 <= bx0:
                continue
            r = np.hypot(np.arange(by0, by1)[:, None] - cy, np.arange(bx0, bx1)[None, :] - cx)
            add = np.where(r <= LANDMARK_R - LANDMARK_RIM, -CORE_SUB, np.where(r <= LANDMARK_R, RIM_ADD, 0.0))
            img[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] += add.astype(img.dtype)


def render_bearing_window(y0: int, x0: int, shape: tuple[int, int], seed: int, *, hash_uniform,
                          cell_grid: int, cell_radius: int, cell_prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(H, W) uint8`` and labels ``(H, W) uint8`` (value ``k + 1`` = class ``k``, 1 = background) of
    the world window starting at ``(y0, x0)``."""
    h, w = shape
    yy = np.arange(y0, y0 + h, dtype=np.int64)[:, None]
    xx = np.arange(x0, x0 + w, dtype=np.int64)[None, :]
    img = BACKGROUND + NOISE * (hash_uniform(seed, yy, xx, 99).astype(np.float32) - 0.5) * 2
    _draw_landmarks(img, y0, x0, seed, hash_uniform)
    # cells: at most one per cell_grid cell, kept off the grid borders so each pixel checks one cell
    gy = np.arange(y0 // cell_grid, (y0 + h - 1) // cell_grid + 1)[:, None]
    gx = np.arange(x0 // cell_grid, (x0 + w - 1) // cell_grid + 1)[None, :]
    jitter = cell_grid - 2 * (cell_radius + 1)
    ccy = gy * cell_grid + cell_radius + 1 + np.floor(hash_uniform(seed, gy, gx, 21) * jitter)
    ccx = gx * cell_grid + cell_radius + 1 + np.floor(hash_uniform(seed, gy, gx, 22) * jitter)
    ldy, ldx, ldist = nearest_landmark(ccy, ccx, seed, hash_uniform)
    present = (hash_uniform(seed, gy, gx, 23) < cell_prob) & (ldist > CLEARANCE)
    cell_type = np.where(present, bearing_class(ldy, ldx), 0)
    iy = (yy // cell_grid - gy[0, 0]).astype(np.intp)
    ix = (xx // cell_grid - gx[0, 0]).astype(np.intp)
    d2 = (yy - ccy[iy, ix]) ** 2 + (xx - ccx[iy, ix]) ** 2
    ctype = cell_type[iy, ix]
    inside = (ctype > 0) & (d2 <= cell_radius**2)
    img = img + np.where(inside, CELL_PEAK * (1.0 - 0.5 * d2 / cell_radius**2), 0.0)
    labels = np.where(inside, ctype + 1, 1).astype(np.uint8)  # value k + 1 = class k; background = class 0
    return np.clip(img, 0, 255).astype(np.uint8), labels
