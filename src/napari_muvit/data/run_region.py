"""Where a run goes, as pure geometry: ``(y0, y1, x0, x1)`` half-open world pixel boxes (the ``Recipe.region``
convention), their centre, and the nested crop bboxes the model sees around a centre point.

Cheap enough to follow the mouse (no pixel is read); the widgets turn a view or a drawn rectangle into such
a box and call these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def clip_region(region, shape_yx: Sequence[int]) -> tuple[int, int, int, int]:
    """Clip ``(y0, y1, x0, x1)`` world px to the slide ``(H, W)``; ValueError when nothing is left."""
    y0, y1, x0, x1 = (float(v) for v in region)
    h, w = int(shape_yx[0]), int(shape_yx[1])
    cy0, cy1 = max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)))
    cx0, cx1 = max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)))
    if cy1 <= cy0 or cx1 <= cx0:
        raise ValueError(
            f"the region y {y0:.0f}:{y1:.0f}, x {x0:.0f}:{x1:.0f} (slide pixels) is outside the image, "
            f"which spans y 0:{h}, x 0:{w}; pan onto the slide or choose 'whole slide'."
        )
    return cy0, cy1, cx0, cx1


def region_center(region) -> tuple[float, float]:
    """World centre ``(y, x)`` of a ``(y0, y1, x0, x1)`` box (the centre of its middle pixel span)."""
    from napari_muvit.data.geometry import pixel_range_centre

    y0, y1, x0, x1 = region
    return (float(pixel_range_centre(y0, y1)), float(pixel_range_centre(x0, x1)))


def context_bboxes(center_yx, levels: Sequence[int], size: int) -> np.ndarray:
    """Nested model crops ``(L, 2, 2)`` world px (first/last pixel centres) around ``center_yx``.

    Same rule as ``Pyramid.crops`` (``data.geometry``), without reading any pixel.
    """
    from napari_muvit.data.geometry import nested_crop_boxes

    _, boxes = nested_crop_boxes(np.asarray(center_yx, dtype=float), list(levels), (size, size))
    return np.asarray(boxes, dtype=float)
