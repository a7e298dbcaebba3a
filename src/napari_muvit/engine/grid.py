"""`TileGrid`: where the tiles of a prediction run sit, which output chunk each one owns, and the blend window.

The output image covers the region ``[y0, y1) x [x0, x1)`` (world = level-1 px). With tile size ``S``
(the model's level-1 crop) and overlap ``o`` (even, ``o <= S/2``), the stride is ``s = S - o`` and
tile ``(i, j)`` has its first level-1 pixel at world ``(y0 - o/2 + i*s, x0 - o/2 + j*s)``. Its central
``s x s`` square, region-relative ``[i*s, (i+1)*s) x [j*s, (j+1)*s)``, is the tile's *owned* region and
is exactly output chunk ``(i, j)`` (level-0 chunks are ``s x s``). Every owned pixel is covered by the
tile itself and, within ``o/2`` of the chunk's edges, by its 8 neighbours only (``o <= s``), so the
blended value of a chunk needs the predictions of at most 3 x 3 tiles, and each chunk has one writer.

Blend window (per axis, ``u`` = pixel index in the tile): ``sin^2(pi/2 (u+0.5)/o)`` on the first ``o``
pixels, its mirror on the last ``o``, 1 in between. In an overlap the left tile's ``cos^2`` and the right
tile's ``sin^2`` sum to exactly 1 (a partition of unity, hence no seams); the weight is never 0, so
pixels at the region border covered by one tile just take that tile's value after normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    """Tile layout over a world region.

    region : ``(y0, y1, x0, x1)`` world px (half-open).  tile : ``S`` px.  overlap : ``o`` px (even).
    """

    region: tuple[int, int, int, int]
    tile: int
    overlap: int

    def __post_init__(self):
        if self.overlap % 2 or self.overlap < 0 or self.overlap > self.tile // 2:
            raise ValueError(
                f"overlap {self.overlap} must be even and at most half the tile size {self.tile}."
            )

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def shape(self) -> tuple[int, int]:
        """Output size ``(H, W)`` in level-1 px."""
        y0, y1, x0, x1 = self.region
        return (y1 - y0, x1 - x0)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of tiles ``(rows, cols)``."""
        h, w = self.shape
        return (math.ceil(h / self.stride), math.ceil(w / self.stride))

    @property
    def n_tiles(self) -> int:
        r, c = self.grid_shape
        return r * c

    def tile_ij(self, index: int) -> tuple[int, int]:
        return divmod(int(index), self.grid_shape[1])

    def tile_index(self, i: int, j: int) -> int:
        return int(i) * self.grid_shape[1] + int(j)

    def tile_origin(self, i: int, j: int) -> tuple[int, int]:
        """World coordinate of the tile's first level-1 pixel (its crop bbox minimum)."""
        y0, _, x0, _ = self.region
        h = self.overlap // 2
        return (y0 - h + i * self.stride, x0 - h + j * self.stride)

    def tile_center(self, i: int, j: int) -> tuple[float, float]:
        """World centre of the tile's level-1 crop (what `Pyramid.crops` takes)."""
        from napari_muvit.data.geometry import tile_centres

        cy, cx = tile_centres(0, self.tile, self.tile_origin(i, j))
        return (float(cy), float(cx))

    def owned(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Region-relative owned box ``(a0, a1, b0, b1)`` = output chunk ``(i, j)`` clipped to the region."""
        h, w = self.shape
        s = self.stride
        return (i * s, min((i + 1) * s, h), j * s, min((j + 1) * s, w))

    def owned_world(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Owned box in world px ``(y0, y1, x0, x1)``."""
        a0, a1, b0, b1 = self.owned(i, j)
        y0, _, x0, _ = self.region
        return (y0 + a0, y0 + a1, x0 + b0, x0 + b1)

    def rows_touching(self, a0: int, a1: int) -> range:
        """Tile rows whose level-1 crops overlap region-relative rows ``[a0, a1)``.

        Row ``i``'s crop spans ``[i s - o/2, i s - o/2 + S)``: it overlaps iff ``(a0 + o/2 - S) / s < i <
        (a1 + o/2) / s``. The same formula serves columns.
        """
        s, h, rows = self.stride, self.overlap // 2, self.grid_shape[0]
        lo = max(0, (a0 + h - self.tile) // s + 1)
        hi = min(rows - 1, -(-(a1 + h) // s) - 1)
        return range(lo, hi + 1)

    def crop_rows(self, i: int) -> tuple[int, int]:
        """Region-relative rows ``[a, b)`` of tile row ``i``'s crop, clipped to the region."""
        top = i * self.stride - self.overlap // 2
        return max(0, top), min(self.shape[0], top + self.tile)

    def neighbours(self, i: int, j: int) -> list[tuple[int, int]]:
        """The tiles (itself included, row-major) whose crops overlap tile ``(i, j)``'s owned region."""
        rows, cols = self.grid_shape
        if self.overlap == 0:
            return [(i, j)]
        return [
            (i + di, j + dj)
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
            if 0 <= i + di < rows and 0 <= j + dj < cols
        ]

    @cached_property
    def window(self) -> np.ndarray:
        """Blend weights ``(S, S)`` float32 (outer product of the 1D window)."""
        w = window_1d(self.tile, self.overlap)
        return np.outer(w, w).astype(np.float32)

    def blend(self, i: int, j: int, predictions: dict) -> np.ndarray:
        """Blended ``(K, a1-a0, b1-b0)`` float32 values of chunk ``(i, j)``.

        ``predictions`` maps neighbour ``(i, j)`` -> ``(K, S, S)`` array; missing neighbours (background
        tiles) are left out and the remaining weights renormalised. Pixels no prediction covers are 0.
        """
        a0, a1, b0, b1 = self.owned(i, j)
        half = self.overlap // 2
        acc = None
        wsum = np.zeros((a1 - a0, b1 - b0), np.float32)
        for ni, nj in self.neighbours(i, j):  # fixed order: identical sums in every process
            pred = predictions.get((ni, nj))
            if pred is None:
                continue
            oy, ox = ni * self.stride - half, nj * self.stride - half  # region-relative origin
            ya, yb = max(a0, oy), min(a1, oy + self.tile)
            xa, xb = max(b0, ox), min(b1, ox + self.tile)
            if ya >= yb or xa >= xb:
                continue
            win = self.window[ya - oy : yb - oy, xa - ox : xb - ox]
            if acc is None:
                acc = np.zeros((pred.shape[0], a1 - a0, b1 - b0), np.float32)
            acc[:, ya - a0 : yb - a0, xa - b0 : xb - b0] += pred[:, ya - oy : yb - oy, xa - ox : xb - ox] * win
            wsum[ya - a0 : yb - a0, xa - b0 : xb - b0] += win
        if acc is None:
            return None
        np.divide(acc, wsum, out=acc, where=wsum > 0)
        return acc

    def to_dict(self) -> dict:
        return {"region": list(self.region), "tile": self.tile, "overlap": self.overlap, "stride": self.stride,
                "grid_shape": list(self.grid_shape)}


def window_1d(size: int, overlap: int) -> np.ndarray:
    """Smooth 1D blend weights (see module docstring); all ones when ``overlap == 0``."""
    w = np.ones(size, np.float64)
    if overlap:
        u = np.arange(overlap, dtype=np.float64)
        ramp = np.sin(0.5 * np.pi * (u + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[size - overlap :] = ramp[::-1]
    return w
