"""A prediction store on disk -> napari layers (probabilities, labels), and a clickable ranked ROI list.

The store is the engine's OME-Zarr, read through `OutputStore.open`: level ``k`` of the probability image has
``factor * 2**k`` world px per pixel and starts at the store's origin (the slide's corner for segmentation,
the region's corner for tile grids and feature maps); ``labels/prediction`` holds
``argmax + 1`` (0 = not predicted yet). Layers read it lazily (dask over zarr), multiscale once the
engine has built the pyramid, so panning a whole-slide result stays fluid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from . import layers


def store_meta(path) -> dict:
    """The ``napari_muvit`` attributes of a prediction store."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    return dict(root.attrs.get("napari_muvit", {}))


def _levels(group, n_levels: int) -> list:
    import dask.array as da

    out = []
    for k in range(max(1, int(n_levels))):
        if str(k) not in group:
            break
        out.append(da.from_zarr(group[str(k)]))
    return out


def store_layers(path, prefix: str = "MuViT", complete: bool | None = None, origin_offset=(0.0, 0.0)) -> list[tuple]:
    """Layer tuples for a prediction store: one heatmap per class and the argmax labels.

    ``origin_offset``: extra world px shift of the image the run was made on (0 for layers built by this
    plugin). ``complete``: use the coarse levels (None = when the store says the run finished).
    """
    from napari_muvit.engine.store import OutputStore

    path = Path(path)
    store = OutputStore.open(path)
    root, meta = store.root, store.meta
    image = meta.get("image") or {}
    factor = store.factor
    y0, x0 = store.origin_yx
    origin = (y0 + origin_offset[0], x0 + origin_offset[1])
    ps, unit = meta.get("pixel_size"), meta.get("unit")
    done = bool(meta.get("complete")) if complete is None else complete
    n_levels = int(meta.get("n_levels", 1)) if done else 1
    names = list(image.get("channel_names") or [])
    extra = {"store": str(path)}
    out = []
    arrays = _levels(root, n_levels)
    if arrays and meta.get("task") in ("encoder", "mae") and int(arrays[0].shape[0]) == 3:
        out.append(layers.rgb_overview_layer(arrays, level=factor, pixel_size=ps, unit=unit,
                                             name=f"{prefix} features (PCA)", origin=origin, extra_meta=extra))
    elif arrays and store.has_probabilities:
        out += layers.probability_layers(arrays, level=factor, pixel_size=ps, unit=unit, class_names=names or None,
                                         prefix=f"{prefix} p", origin=origin, extra_meta=extra,
                                         class_colors=image.get("colors"))
    if "labels" in root and "prediction" in root["labels"]:
        from ._reader import _attrs, _label_colors

        group = root["labels"]["prediction"]
        label_arrays = _levels(group, n_levels)
        if label_arrays:
            labels_names = ["not predicted", *(meta.get("labels") or [])]
            out.append(layers.labels_layer(label_arrays, level=factor, pixel_size=ps, unit=unit,
                                           name=f"{prefix} labels", class_names=labels_names,
                                           class_colors=_label_colors(_attrs(group)), origin=origin,
                                           extra_meta=extra))
    return out


def read_preview(path, max_side: int = 1024, max_read_px: int = 4096 * 4096) -> dict | None:
    """Level 0 of a running store, strided to at most ``max_side`` px, as a preview dict: ``probs (K, h, w)``,
    ``stride``, ``labels (h, w)`` or None, the store's ``meta`` and ``label_colors`` (one store open). None
    also for outputs over ``max_read_px`` pixels: reading them every second would slow the run.

    Runs on the worker side; a chunk being written at the same moment just makes this preview skip.
    """
    import zarr

    from ._reader import _attrs, _label_colors

    try:
        root = zarr.open_group(str(path), mode="r")
        arr = root["0"]
        meta = dict(root.attrs.get("napari_muvit", {}))
        factor = float((meta.get("image") or {}).get("factor", 1))
        origin = None
        if (meta.get("layout") or {}).get("extent") == "slide":  # whole-slide store: the region's box only
            y0, y1, x0, x1 = meta["region"]
            r0, r1, c0, c1 = int(y0 // factor), int(-(-y1 // factor)), int(x0 // factor), int(-(-x1 // factor))
            origin = (r0 * factor, c0 * factor)
        else:
            r0, r1, c0, c1 = 0, arr.shape[-2], 0, arr.shape[-1]
        h, w = r1 - r0, c1 - c0
        if h * w > max_read_px:
            return None
        stride = max(1, int(np.ceil(max(h, w) / max_side)))
        probs = np.asarray(arr[:, r0:r1:stride, c0:c1:stride])
        labels = colors = None
        if "labels" in root and "prediction" in root["labels"]:
            group = root["labels"]["prediction"]
            labels = np.asarray(group["0"][r0:r1:stride, c0:c1:stride])
            colors = _label_colors(_attrs(group))
        return {"probs": probs, "stride": stride, "labels": labels, "meta": meta, "label_colors": colors,
                "origin": origin}
    except Exception:  # noqa: BLE001 - a preview is best effort, the final layers are not
        return None


class RoiTable(QTableWidget):
    """Ranked ROI list (rank, score, y, x in world px); clicking a row emits ``roi_clicked(y, x, size)``."""

    roi_clicked = Signal(float, float, float)

    def __init__(self, parent=None):
        super().__init__(0, 4, parent)
        self.setHorizontalHeaderLabels(["rank", "score", "y", "x"])
        self.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setMaximumHeight(180)
        self._rows: list[tuple[float, float, float]] = []
        self.cellClicked.connect(self._clicked)

    def set_rois(self, ranks, scores, centers_yx, sizes) -> None:
        self.setRowCount(len(ranks))
        self._rows = []
        for r, (rank, score, (y, x), size) in enumerate(zip(ranks, scores, centers_yx, sizes)):
            for c, text in enumerate([f"{int(rank)}", f"{float(score):.3f}", f"{y:.0f}", f"{x:.0f}"]):
                self.setItem(r, c, QTableWidgetItem(text))
            self._rows.append((float(y), float(x), float(size)))

    def _clicked(self, row: int, _col: int) -> None:
        if 0 <= row < len(self._rows):
            self.roi_clicked.emit(*self._rows[row])


def centre_camera(viewer, y: float, x: float, size_px: float, pixel_size=None, fill: float = 0.5) -> None:
    """Centre the camera on world px ``(y, x)`` and zoom so ``size_px`` fills ``fill`` of the canvas."""
    from .region import scene_camera

    camera = scene_camera(viewer)
    center = layers.world_to_napari([y, x], pixel_size)
    cam_center = list(camera.center)
    cam_center[-2:] = [float(center[0]), float(center[1])]
    camera.center = tuple(cam_center)
    extent = float(size_px) * float(np.mean(np.atleast_1d(1.0 if pixel_size is None else pixel_size)))
    if extent > 0:
        camera.zoom = fill * float(min(viewer.canvas.size)) / extent
