"""Where to run: the current view, a rectangle from a Shapes layer, or the whole slide (world px).

Regions are ``(y0, y1, x0, x1)`` half-open world pixel boxes (the ``Recipe.region`` convention), and
the context preview turns a centre point into the nested crop bboxes the model will see; all pure
geometry, so it is cheap enough to follow the mouse.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .layers import napari_to_world

REGION_MODES = ("current view", "shapes layer", "whole slide")


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


def scene_camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def view_region(viewer, pixel_size=None) -> tuple[float, float, float, float]:
    """The part of the slide the canvas shows, ``(y0, y1, x0, x1)`` world px (unclipped)."""
    if viewer.dims.ndisplay != 2:
        raise ValueError("the current view is 3D; switch napari to 2D view to run on the visible region.")
    camera = scene_camera(viewer)
    center = np.asarray(camera.center, dtype=float)[-2:]
    half = np.asarray(viewer.canvas.size, dtype=float)[-2:] / float(camera.zoom) / 2.0
    lo = napari_to_world(center - half, pixel_size)
    hi = napari_to_world(center + half, pixel_size)
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def shapes_region(shapes_layer, pixel_size=None) -> tuple[float, float, float, float]:
    """Bounding box of the selected shape (else the last one) of a Shapes layer, world px."""
    if shapes_layer is None or len(shapes_layer.data) == 0:
        name = getattr(shapes_layer, "name", "none")
        raise ValueError(f"the Shapes layer {name!r} has no rectangle; draw one or choose another region mode.")
    selected = sorted(shapes_layer.selected_data)
    verts = np.asarray(shapes_layer.data[selected[-1] if selected else -1], dtype=float)
    world = np.asarray([shapes_layer.data_to_world(v) for v in verts])[:, -2:]
    world = napari_to_world(world, pixel_size)
    lo, hi = world.min(axis=0), world.max(axis=0)
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def region_center(region) -> tuple[float, float]:
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
