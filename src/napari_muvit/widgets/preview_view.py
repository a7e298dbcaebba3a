"""Live results while a prediction runs: the finished part of the store as heatmaps and labels.

The worker side reads a strided copy of the store's level 0 about once a second (`prediction_job`);
here it only replaces layer data (the labels while the run goes, every output at the end). Building a napari layer costs the GUI thread 100-250 ms on a small
machine (swapping data costs 10-80 ms), so the preview layers are made once, empty, when Run is clicked
(`placeholder_preview`; only those the result will swap into, `PredictWidget._placeholders`), and every
later preview and a small final result only swap data.
"""

from __future__ import annotations

import math

import numpy as np

from . import layer_updates as U
from . import layers as L

PREVIEW_SIDE = 256  # px per side of a live preview: small, so each update is a cheap texture swap


def preview_tuples(preview: dict, origin_offset=(0.0, 0.0), with_probabilities: bool = True) -> list[tuple]:
    """Layer tuples for a preview dict (``probs``, ``labels``, ``stride``, ``meta``, ``label_colors``).
    ``with_probabilities=False``: only the labels (when there are any)."""
    meta = preview["meta"]
    image = meta.get("image") or {}
    # a strided preview pixel stands for the block of store pixels it was sampled from
    factor = float(image.get("factor", 1)) * preview["stride"]
    y0, _, x0, _ = meta.get("region") or (0, 0, 0, 0)
    if preview.get("origin") is not None:  # a whole-slide store's preview starts at its region box
        y0, x0 = preview["origin"]
    names = list(image.get("channel_names") or [])
    origin = np.add((y0, x0), origin_offset)
    extra = {"output": True, "preview": True}
    if meta.get("task") in ("encoder", "mae") and preview["probs"].shape[0] == 3:  # PCA colours
        return [L.rgb_overview_layer(preview["probs"], level=factor, pixel_size=meta.get("pixel_size"),
                                     unit=meta.get("unit"), name="MuViT features (PCA)", origin=origin,
                                     extra_meta=extra)]
    out = []
    if with_probabilities or preview.get("labels") is None:
        out = L.probability_layers(preview["probs"], level=factor, pixel_size=meta.get("pixel_size"),
                                   unit=meta.get("unit"), class_names=names or None, prefix="MuViT p",
                                   origin=origin, extra_meta=extra, class_colors=image.get("colors"))
    if preview.get("labels") is not None:
        out.append(L.labels_layer(
            preview["labels"], level=factor, pixel_size=meta.get("pixel_size"), unit=meta.get("unit"),
            name="MuViT labels", class_names=["not predicted", *(meta.get("labels") or [])],
            class_colors=preview.get("label_colors"), origin=origin, extra_meta=extra))
    return out


def placeholder_preview(region, class_names, pixel_size=None, unit=None, class_colors=None) -> dict:
    """An all-empty preview of a segmentation run over ``region`` ``(y0, y1, x0, x1)`` world px, shaped
    exactly like the worker's previews of it (store factor 1, same stride), in the model's class colours."""
    y0, y1, x0, x1 = region
    h, w = y1 - y0, x1 - x0
    stride = max(1, math.ceil(max(h, w) / PREVIEW_SIDE))
    shape = (math.ceil(h / stride), math.ceil(w / stride))
    k = len(class_names)
    meta = {"image": {"factor": 1, "channel_names": list(class_names), "colors": list(class_colors or [])},
            "region": list(region),
            "pixel_size": None if pixel_size is None else list(pixel_size), "unit": unit,
            "labels": list(class_names)}
    return {"probs": np.zeros((k, *shape), np.float32), "labels": np.zeros(shape, np.uint8), "stride": stride,
            "meta": meta, "label_colors": ["#00000000", *class_colors] if class_colors else None}


def show_preview(viewer, preview: dict, origin_offset=(0.0, 0.0), live: bool = False) -> list:
    """Put a preview in the viewer. ``live`` (while the run goes): only the labels layer is updated, the
    heatmaps wait for the final result; each layer update costs a repaint (~50 ms with software OpenGL),
    measured to be what pushes the GUI heartbeat over 100 ms (docs/benchmarks.md)."""
    tuples = preview_tuples(preview, origin_offset, with_probabilities=not live)
    return [U.add_or_update(viewer, tup) for tup in tuples]
