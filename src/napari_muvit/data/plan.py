"""`CropPlan`: the tiles of the level-1 crop grid over a world region, with their nested crops."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import crop_bbox, crop_start_index, validate_crop_size, validate_levels


@dataclass(frozen=True)
class Tile:
    """One tile: ``(y0, x0)`` = world corner of its finest crop's first pixel; ``center_yx`` its centre.

    ``row``/``col`` are the tile's position in the plan's grid (row-major ``index``).
    """

    index: int
    y0: int
    x0: int
    center_yx: tuple[float, float]
    row: int = 0
    col: int = 0


class CropPlan:
    """Tiles of the finest level's crop grid over a region, in deterministic row-major order.

    pyramid: the `Pyramid` the crops come from (2-D slides).
    region: ``(y0, y1, x0, x1)`` world px (half-open), or None for the whole slide.
    levels: nested downsample factors, e.g. ``(1, 8, 32)``; size: crop side in pixels.
    overlap: pixels (of the finest level) shared by neighbouring tiles; stride = size - overlap.
    mask: ``(mask 2D bool, level)`` as returned by `foreground_mask`, or a 2D bool array covering the
        slide (its factor is taken from the shape ratio): tiles whose footprint has no True pixel are skipped.
    """

    def __init__(self, pyramid, region=None, levels=(1, 8, 32), size=256, overlap=0, mask=None):
        if pyramid.spatial_ndim != 2:
            raise ValueError("crop plans cover 2-D slides; this image is 3-D (use Pyramid.crops directly).")
        self.pyramid = pyramid
        self.levels = validate_levels(levels)
        self.size = validate_crop_size(size)
        if int(overlap) != overlap or not 0 <= overlap < self.size:
            raise ValueError(f"overlap {overlap!r} must be a whole number of pixels from 0 to {self.size - 1}.")
        self.overlap = int(overlap)
        self.region = self._check_region(region)
        self.done: set[int] = set()
        self.tiles = self._make_tiles(mask)

    # ---- construction ---------------------------------------------------------------------------
    def _check_region(self, region) -> tuple[int, int, int, int]:
        h, w = self.pyramid.shape
        if region is None:
            return (0, int(h), 0, int(w))
        try:
            y0, y1, x0, x1 = (float(v) for v in region)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"region {region!r} must be (y0, y1, x0, x1) in full-resolution pixels.") from exc
        if not (y1 > y0 and x1 > x0):
            raise ValueError(f"region {tuple(region)} is empty; it must satisfy y0 < y1 and x0 < x1.")
        y0, x0 = max(0.0, y0), max(0.0, x0)
        y1, x1 = min(float(h), y1), min(float(w), x1)
        if not (y1 > y0 and x1 > x0):
            raise ValueError(f"region {tuple(region)} lies outside the slide (size {h} x {w} px).")
        return (int(math.floor(y0)), int(math.ceil(y1)), int(math.floor(x0)), int(math.ceil(x1)))

    def _make_tiles(self, mask) -> list[Tile]:
        f0 = self.levels[0]
        footprint = self.size * f0
        stride = (self.size - self.overlap) * f0
        y0, y1, x0, x1 = self.region
        y0, x0 = (y0 // f0) * f0, (x0 // f0) * f0  # the finest crops sit on that level's pixel grid
        n_rows = max(1, math.ceil((y1 - y0 - self.overlap * f0) / stride))
        n_cols = max(1, math.ceil((x1 - x0 - self.overlap * f0) / stride))
        keep = self._mask_test(mask)
        tiles = []
        for r in range(n_rows):
            for c in range(n_cols):
                ty, tx = y0 + r * stride, x0 + c * stride
                if keep is not None and not keep(ty, tx, footprint):
                    continue
                center = (ty + (footprint - 1) / 2, tx + (footprint - 1) / 2)
                tiles.append(Tile(len(tiles), int(ty), int(tx), center, r, c))
        return tiles

    def _mask_test(self, mask):
        if mask is None:
            return None
        if isinstance(mask, tuple):
            arr, factor = np.asarray(mask[0], dtype=bool), float(mask[1])
        else:
            arr = np.asarray(mask, dtype=bool)
            factor = self.pyramid.shape[-1] / arr.shape[-1]
        if arr.ndim != 2:
            raise ValueError(f"the tissue mask must be a 2-D array, got shape {arr.shape}.")
        # prefix sums: any True pixel in a footprint in O(1)
        sums = np.pad(arr.cumsum(0).cumsum(1), ((1, 0), (1, 0)))

        def keep(ty, tx, footprint):
            a0, b0 = int(ty // factor), int(tx // factor)
            a1 = int(math.ceil((ty + footprint) / factor))
            b1 = int(math.ceil((tx + footprint) / factor))
            a0, a1 = np.clip([a0, a1], 0, arr.shape[0])
            b0, b1 = np.clip([b0, b1], 0, arr.shape[1])
            return sums[a1, b1] - sums[a0, b1] - sums[a1, b0] + sums[a0, b0] > 0

        return keep

    # ---- per tile --------------------------------------------------------------------------------
    def bboxes(self, tile: Tile) -> np.ndarray:
        """World bboxes ``(L, 2, 2)`` of a tile's nested crops, without reading pixels."""
        out = np.zeros((len(self.levels), 2, 2), np.float32)
        for j, f in enumerate(self.levels):
            start = crop_start_index(np.asarray(tile.center_yx), f, self.size)
            out[j] = crop_bbox(start, f, self.size)
        return out

    def crops(self, tile: Tile, normalizer=None, return_valid=False):
        """The tile's nested crops, as `Pyramid.crops` returns them."""
        return self.pyramid.crops(tile.center_yx, self.levels, self.size, normalizer=normalizer,
                                  return_valid=return_valid)

    def mark_done(self, index) -> None:
        for i in np.atleast_1d(index).tolist():
            if not 0 <= int(i) < len(self.tiles):
                raise ValueError(f"tile index {i} is outside this plan (0 to {len(self.tiles) - 1}).")
            self.done.add(int(i))

    @property
    def remaining(self) -> list[Tile]:
        return [t for t in self.tiles if t.index not in self.done]

    @property
    def grid_shape(self) -> tuple[int, int]:
        if not self.tiles:
            return (0, 0)
        return (max(t.row for t in self.tiles) + 1, max(t.col for t in self.tiles) + 1)

    def __len__(self) -> int:
        return len(self.tiles)

    # ---- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "region": list(self.region), "levels": list(self.levels), "size": self.size,
            "overlap": self.overlap, "slide_shape": list(self.pyramid.shape),
            "tiles": [[t.y0, t.x0, t.row, t.col] for t in self.tiles], "done": sorted(self.done),
        }

    @classmethod
    def from_dict(cls, d: dict, pyramid) -> CropPlan:
        if list(d.get("slide_shape", pyramid.shape)) != list(pyramid.shape):
            raise ValueError(
                f"this crop plan was made for a slide of shape {tuple(d['slide_shape'])}, not {pyramid.shape}."
            )
        plan = cls.__new__(cls)
        plan.pyramid = pyramid
        plan.levels = validate_levels(d["levels"])
        plan.size = validate_crop_size(d["size"])
        plan.overlap = int(d.get("overlap", 0))
        plan.region = tuple(int(v) for v in d["region"])
        footprint = plan.size * plan.levels[0]
        plan.tiles = [
            Tile(i, int(y), int(x), (y + (footprint - 1) / 2, x + (footprint - 1) / 2), int(r), int(c))
            for i, (y, x, r, c) in enumerate(d["tiles"])
        ]
        plan.done = set()
        plan.mark_done(d.get("done", []))
        return plan
