"""Ranked ROIs of a prediction store -> a Points layer with a features table, the ROI list rows, exports.

Ranking and export formats belong to the engine (``napari_muvit.engine.rois``); this module only turns
its table into a layer and list rows in world pixels.
"""

from __future__ import annotations


def roi_layer_and_table(store, pixel_size=None, origin_offset=(0.0, 0.0)):
    """``(points layer tuple, (ranks, scores, centres_yx, sizes))`` or ``(None, None)`` when the engine
    has no ROI ranking."""
    try:
        from napari_muvit.engine import rois  # noqa: F401
    except ImportError:
        return None, None
    raise NotImplementedError


def export_rois(store, fmt: str, path=None):
    raise ValueError("ROI export is not available in this build.")
