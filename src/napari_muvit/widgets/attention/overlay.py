"""The attention probe's layers: one map per level on the crop's pixels, the query marker, the crop outlines.

Turns a `ProbeView` (what the engine's `AttentionResult` says, in world px) into world-aligned napari layers,
updating them in place on every probe so that hovering never piles layers up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_muvit.widgets.layer_updates import add_or_update
from napari_muvit.widgets.layers import (
    attention_map_layer,
    crop_outlines_layer,
    query_marker_layer,
)

MAP_PREFIX = "attention level "
QUERY_LAYER = "attention query"
CROPS_LAYER = "attention crops"


def attention_colormap():
    """See-through at no attention, dark red -> yellow -> white at the most: a coarse level's map does not
    veil the slide where the query does not look."""
    from napari.utils.colormaps import Colormap

    return Colormap(colors=[[0.0, 0.0, 0.0, 0.0], [0.6, 0.0, 0.0, 0.55], [1.0, 0.55, 0.0, 0.8],
                            [1.0, 1.0, 0.4, 0.9], [1.0, 1.0, 1.0, 1.0]],
                    controls=[0.0, 0.25, 0.5, 0.75, 1.0], name="muvit attention", display_name="attention")


def map_limits(maps, shared: bool) -> list[tuple[float, float]]:
    """Contrast limits ``(0, top)`` per map: each map's own maximum, or one maximum for all levels
    (``shared``), so colours compare across levels."""
    tops = [float(np.max(m)) if np.size(m) and np.max(m) > 0 else 1.0 for m in maps]
    if shared and tops:
        tops = [max(tops)] * len(tops)
    return [(0.0, t) for t in tops]

def token_grid_placement(bbox, level: float, shape) -> tuple[np.ndarray, np.ndarray]:
    """World placement of a per-token map: `(scale, translate)` in world px (multiply by pixel size).

    `bbox` (2, 2) world px: centres of the first and last pixel of the level's crop (the model's bbox);
    `level` the crop's downsample factor; `shape` (h, w) token grid. Each cell covers `level * patch`
    world px, i.e. `(bbox extent + level) / n` per axis, and its centre sits at the centre of the pixels it
    was computed from, so the map lies exactly on the crop's pixels.
    """
    bbox = np.asarray(bbox, dtype=float)
    shape = np.asarray(shape[-2:], dtype=float)
    from napari_muvit.data.geometry import corner_centre, pixel_corner

    edge = pixel_corner(bbox[0], level)  # world coordinate of the crop's first pixel edge (pixel k: [k f, (k+1) f))
    cell = (bbox[1] - bbox[0] + level) / shape
    return cell, corner_centre(edge, cell)


@dataclass
class ProbeView:
    """What the overlay draws: one map per level, plus where the query token is.

    `maps[i]` (h_i, w_i) float attention of the query to level `levels[i]`'s tokens, `bboxes[i]` (2, 2)
    world px of that level's crop, `query_world_yx` (2,) world px, `query_level` the query token's level,
    `patch_size` in pixels of each level.
    """

    levels: tuple[int, ...]
    maps: list
    bboxes: list
    query_world_yx: np.ndarray
    query_level: int
    patch_size: int


class AttentionOverlay:
    """One Image layer per level, the query marker and the crop outlines; replaced, never piled up."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.levels: tuple[int, ...] = ()
        self.shared_scale = True  # one colour scale for every level's map (False: each map its own)
        self.limits: dict[int, tuple[float, float]] = {}
        self.maxima: dict[int, float] = {}  # each level's own largest attention value

    def legend(self) -> str:
        """Plain words for the maps' colours and scale (shown in the dock under the maps)."""
        if not self.limits:
            return ""
        tops = ", ".join(f"x{lv} {self.maxima.get(lv, hi):.3g}" for lv, (_, hi) in sorted(self.limits.items()))
        if self.shared_scale:
            top = max(hi for _, hi in self.limits.values())
            scale = f"one scale for all levels, 0 to {top:.3g}: colours compare across levels"
        else:
            scale = "each level scaled to its own maximum: colours do not compare across levels"
        return (f"Attention of the query token: see-through = none, red -> yellow -> white = most; {scale} "
                f"(largest value per level: {tops}).")

    def show(self, view: ProbeView, pixel_size=None, unit=None, steps=None) -> None:
        """Draw ``view``. ``steps`` (a `LayerSteps`): when layers have to be added (the first probe), add
        them one per event-loop turn through it (napari holds the viewer 0.1-0.3 s for each new layer on a
        small machine); updates of existing layers happen at once (one repaint)."""
        for level in self.levels:
            name = f"{MAP_PREFIX}{level}"
            if level not in view.levels and name in self.viewer.layers:
                self.viewer.layers.remove(name)
        # coarse maps first so finer ones sit on top of them
        order = sorted(range(len(view.levels)), key=lambda i: -view.levels[i])
        limits = map_limits(view.maps, self.shared_scale)
        finest = min(range(len(view.levels)), key=lambda i: view.levels[i]) if view.levels else None
        self.limits, self.maxima = {}, {}
        todo = []
        for i in order:
            level = int(view.levels[i])
            data = np.asarray(view.maps[i], dtype=np.float32)
            cell, origin = token_grid_placement(view.bboxes[i], level, data.shape)
            tup = attention_map_layer(data, level, cell, origin, limits[i], attention_colormap(), pixel_size,
                                      name=f"{MAP_PREFIX}{level}")
            # one colour bar: on the finest map when the scale is shared, else on every map
            todo.append(lambda tup=tup, lim=limits[i], bar=(i == finest) or not self.shared_scale:
                        self._show_map(tup, lim, bar))
            self.limits[level] = limits[i]
            self.maxima[level] = float(data.max()) if data.size else 0.0
        self.levels = tuple(int(v) for v in view.levels)
        crops = crop_outlines_layer(view.bboxes, view.levels, pixel_size, unit, name=CROPS_LAYER)
        todo.append(lambda: add_or_update(self.viewer, crops, moved=True))
        size = view.query_level * view.patch_size
        todo.append(lambda: self._show_marker(query_marker_layer(view.query_world_yx, size, pixel_size,
                                                                 QUERY_LAYER), size))
        names = [f"{MAP_PREFIX}{lv}" for lv in self.levels] + [CROPS_LAYER, QUERY_LAYER]
        if steps is not None and any(name not in self.viewer.layers for name in names):
            steps.queue(todo)
        else:
            for step in todo:
                step()

    def _show_map(self, layer_tuple, limits, colorbar: bool):
        layer = add_or_update(self.viewer, layer_tuple)
        layer.contrast_limits = limits
        layer.colorbar.visible = colorbar
        return layer

    def _show_marker(self, layer_tuple, size):
        marker = add_or_update(self.viewer, layer_tuple, moved=True)
        if not np.allclose(marker.size, size):
            marker.size = size
        return marker

    def clear(self) -> None:
        names = [f"{MAP_PREFIX}{lv}" for lv in self.levels] + [QUERY_LAYER, CROPS_LAYER]
        for name in names:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.levels = ()
        self.limits, self.maxima = {}, {}

