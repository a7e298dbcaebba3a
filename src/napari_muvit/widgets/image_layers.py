"""Reading image layers for the teaching and attention docks: layer pickers, source, shape, pixel size."""

from __future__ import annotations

from napari_muvit.data.run_region import clip_region
from napari_muvit.widgets.layers import META_KEY, layer_pixel_size
from napari_muvit.widgets.region import view_region


def layers_of(viewer, kind: str) -> list:
    """The viewer's layers of one kind: 'image', 'labels' or 'rois' (Shapes and Points)."""
    import napari.layers as nl

    cls = {"image": nl.Image, "labels": nl.Labels, "rois": (nl.Shapes, nl.Points)}[kind]
    return [layer for layer in viewer.layers if isinstance(layer, cls)]


def image_layers_of(viewer) -> list:
    """Image layers that can be probed: every Image layer but the attention maps themselves."""
    return [layer for layer in layers_of(viewer, "image")
            if (layer.metadata.get(META_KEY) or {}).get("kind") != "attention"]


def image_source(layer):
    """What the engine opens for an image layer: the file it came from, else its (multiscale) data."""
    source = (layer.metadata.get(META_KEY) or {}).get("source")
    return source if source else layer.data


def image_shape_yx(layer) -> tuple[int, int]:
    """Level-1 `(Y, X)` of an image layer (multiscale or not, RGB or not)."""
    shape = tuple(layer.level_shapes[0] if layer.multiscale else layer.data.shape)
    return tuple(int(v) for v in (shape[-3:-1] if layer.rgb else shape[-2:]))


def image_pixel_size(layer) -> tuple[float, float]:
    """Physical size of a level-1 pixel of an image layer: from our layer builder, else its napari scale."""
    return layer_pixel_size(layer) or tuple(float(s) for s in layer.scale[-2:])


def view_region_of(viewer, layer) -> tuple[int, int, int, int]:
    """The canvas's view as `(y0, y1, x0, x1)` world px of `layer`, clipped onto the image."""
    return clip_region(view_region(viewer, image_pixel_size(layer)), image_shape_yx(layer))
