"""Where to run, read from the viewer: the current view or a rectangle from a Shapes layer (world px).

Regions are ``(y0, y1, x0, x1)`` half-open world pixel boxes (the ``Recipe.region`` convention); clipping
them, their centre and the nested context crops are pure geometry in ``data.run_region``.
"""

from __future__ import annotations

import numpy as np

from .layers import napari_to_world

REGION_MODES = ("current view", "shapes layer", "whole slide")


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
