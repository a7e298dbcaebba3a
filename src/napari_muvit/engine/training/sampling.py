"""Random nested crop centres inside an allowed area (foreground, labelled pixels, a training region).

The finest crop's centre is drawn uniformly inside the allowed cells of a coarse boolean mask; each
coarser crop's centre is then shifted at random as far as nesting allows (the coarse crop still contains
the finer one), so training sees nested but not only concentric crops, as MuViT's world boxes permit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class AreaSampler:
    """Uniform world points inside the True cells of ``mask`` (2D bool, one cell = ``cell`` world px).

    ``mask[i, j]`` covers world ``[i*cell, (i+1)*cell) x [j*cell, (j+1)*cell)``.
    """

    def __init__(self, mask: np.ndarray, cell: float):
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"The sampling mask must be 2D, got shape {mask.shape}.")
        self.cells = np.argwhere(mask)
        if len(self.cells) == 0:
            raise ValueError("There is no foreground (or labelled) area to sample training crops from.")
        self.cell = float(cell)
        self.shape = mask.shape

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, 2)`` float world (y, x) points."""
        idx = rng.integers(len(self.cells), size=n)
        offset = rng.uniform(0, 1, size=(n, 2))
        from ...data.geometry import edge_to_centre_frame

        # a point drawn in the edge frame of the cells -> world (level-1 pixel centres sit on integers)
        return edge_to_centre_frame((self.cells[idx] + offset) * self.cell)


def nested_centers(
    rng: np.random.Generator, fine_centers: np.ndarray, levels: Sequence[float], size: int, shift: float = 1.0
) -> np.ndarray:
    """Centres ``(n, L, 2)`` world px of nested crops, level ``levels[0]`` at ``fine_centers (n, 2)``.

    The crop of level ``l`` covers ``size*l`` world px; level ``i`` is moved from level ``i-1`` by up to
    ``shift * (size*(l_i - l_{i-1})/2 - l_i)`` per axis (the ``- l_i`` absorbs rounding of the centre to
    that level's pixel grid), so it always contains the finer crop. ``shift=0`` gives concentric crops.
    """
    n = len(fine_centers)
    centers = np.empty((n, len(levels), 2), dtype=np.float64)
    centers[:, 0] = fine_centers
    for i in range(1, len(levels)):
        room = max(0.0, size * (levels[i] - levels[i - 1]) / 2.0 - levels[i]) * shift
        centers[:, i] = centers[:, i - 1] + rng.uniform(-room, room, size=(n, 2))
    return centers


class NestedCropSampler:
    """Draws batches of nested multi-level crops from a Pyramid inside an allowed area.

    ``pyramid`` follows the data contract (``crops(center_yx, levels, size, normalizer)``); ``area`` is an
    :class:`AreaSampler`; ``rng`` is the numpy generator whose state is checkpointed.
    Returns from :meth:`sample`: ``img (n, L, C, size, size) float32``, ``bbox (n, L, 2, 2)`` world px and
    ``centers (n, L, 2)``.
    """

    def __init__(self, pyramid, levels, size: int, area: AreaSampler, rng: np.random.Generator,
                 normalizer=None, shift: float = 1.0):
        self.pyramid, self.levels, self.size = pyramid, tuple(levels), int(size)
        self.area, self.rng, self.normalizer, self.shift = area, rng, normalizer, shift

    def sample_centers(self, n: int) -> np.ndarray:
        fine = self.area.sample(self.rng, n)
        return nested_centers(self.rng, fine, self.levels, self.size, self.shift)

    def read(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read the crops of ``centers (n, L, 2)``: one ``crops`` call per level (their centres differ)."""
        imgs, boxes = [], []
        for c in centers:
            per_level = [
                self.pyramid.crops(tuple(c[i]), (lvl,), self.size, normalizer=self.normalizer)
                for i, lvl in enumerate(self.levels)
            ]
            imgs.append(np.concatenate([np.asarray(p[0], dtype=np.float32) for p in per_level], axis=0))
            boxes.append(np.concatenate([np.asarray(p[1], dtype=np.float64) for p in per_level], axis=0))
        return np.stack(imgs), np.stack(boxes)

    def sample(self, n: int):
        centers = self.sample_centers(n)
        img, bbox = self.read(centers)
        return img, bbox, centers
