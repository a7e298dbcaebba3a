"""What a run needs from the viewer: the chosen image as a `Pyramid` in world pixels, and input checks.

A layer opened by this plugin carries its file path (``metadata["muvit"]["source"]``) and is reopened
from it (all channels, all stored levels). Any other image layer becomes an in-memory pyramid of its
data; its napari ``scale`` is taken as the level-1 pixel size and its ``translate`` as an offset, so
outputs land on it whatever transform it has. Only metadata is read here, never pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_muvit.data.geometry import slide_translation
from napari_muvit.widgets.layers import META_KEY, napari_to_world


@dataclass
class ImageInput:
    """The image a run uses. ``origin_offset``: world px of the layer's translate (0 for plugin layers)."""

    layer: object
    pyramid: object
    source: str | None
    pixel_size: tuple | None
    unit: str | None
    origin_offset: tuple[float, float]

    def to_image_world(self, region):
        """``(y0, y1, x0, x1)`` world px of napari's frame -> of the image (minus the layer offset)."""
        oy, ox = self.origin_offset
        y0, y1, x0, x1 = region
        return (y0 - oy, y1 - oy, x0 - ox, x1 - ox)

    def to_image_world_point(self, napari_yx) -> np.ndarray:
        ps = None if self.pixel_size is None else self.pixel_size[-2:]
        return napari_to_world(napari_yx, ps) - np.asarray(self.origin_offset)

    def from_image_world_boxes(self, bboxes) -> np.ndarray:
        """Crop bboxes ``(L, 2, 2)`` of the image frame -> napari's world px frame."""
        return np.asarray(bboxes, dtype=float) + np.asarray(self.origin_offset)


def image_input(layer) -> ImageInput:
    """Turn an image layer into an `ImageInput` (ValueError with one sentence when it cannot be used)."""
    from napari_muvit.data import open_pyramid

    meta = (layer.metadata or {}).get(META_KEY) or {}
    source = meta.get("source")
    ndim = 2 if layer.rgb and layer.ndim == 2 else layer.ndim
    scale = np.asarray(layer.scale, dtype=float)[-2:]
    translate = np.asarray(layer.translate, dtype=float)[-2:]
    units = getattr(layer, "units", None)
    unit = str(units[-1]) if units is not None and str(units[-1]) not in ("pixel", "") else None
    if source and Path(source).exists():
        pyramid = open_pyramid(source)
        ps = pyramid.pixel_size
        f0 = float(pyramid.level_factors[0])
        px = np.ones(2) if ps is None else np.asarray(ps[-2:], dtype=float)
        # the slide's own translation as the layer shows it, over the one our reader gave the layer
        offset = tuple(float(v) for v in slide_translation(translate, f0, px) / px)
        return ImageInput(layer, pyramid, str(source), None if ps is None else tuple(ps), pyramid.unit or unit, offset)
    data = list(layer.data) if layer.multiscale else layer.data
    if layer.rgb:
        axes = "yxc"
    else:
        axes = {2: "yx", 3: "zyx"}.get(ndim)
        if axes is None:
            raise ValueError(
                f"the image layer {layer.name!r} has {ndim} dimensions; MuViT takes 2D (Y, X) or 3D (Z, Y, X) "
                "images, so pick a 2D or 3D layer."
            )
    pyramid = open_pyramid(data, name=layer.name, axes=axes)
    pixel_size = tuple(float(s) for s in np.asarray(layer.scale, dtype=float)[-pyramid.spatial_ndim:])
    pyramid.pixel_size = None if np.allclose(pixel_size, 1.0) else pixel_size
    pyramid.unit = unit
    offset = tuple(float(v) for v in translate / scale)
    return ImageInput(layer, pyramid, None, pyramid.pixel_size, unit, offset)


def check_inputs(image: ImageInput, info, levels) -> None:
    """The image and model fit each other (dimensions, channels, levels); ValueError otherwise."""
    from napari_muvit.widgets.levels import level_source

    p = image.pyramid
    name = getattr(image.layer, "name", "image")
    model = "the built-in demo model" if info.source == "demo" else f"the model {Path(info.source).name!r}"
    if p.spatial_ndim != info.ndim:
        shape = " x ".join(str(n) for n in p.shape)
        raise ValueError(
            f"the image layer {name!r} is {p.spatial_ndim}D ({shape} px) but {model} works on {info.ndim}D "
            f"images; choose a {info.ndim}D image or a {p.spatial_ndim}D model."
        )
    if p.n_channels != info.in_channels:
        kind = "RGB colour" if p.rgb else f"{p.n_channels} channel(s)"
        want = "an RGB image" if info.in_channels == 3 else f"a {info.in_channels}-channel image"
        raise ValueError(
            f"the image layer {name!r} has {kind} but {model} expects {info.in_channels} channel(s); "
            f"choose {want} or a model trained on {kind}."
        )
    bad = [f for f in levels if level_source(f, p.level_factors)[0] == "missing"]
    if bad:
        raise ValueError(
            f"level x{bad[0]} cannot be made from the slide {name!r} (its levels are "
            f"{', '.join(f'x{f:g}' for f in p.level_factors)}); untick it."
        )


def notify_error(sentence: str) -> None:
    """Show a user problem as a napari notification (never a traceback dialog)."""
    from napari.utils.notifications import show_error

    show_error(sentence)


def runs_dir() -> Path:
    """Folder for prediction stores made from the widget."""
    from napari_muvit.widgets._sample import cache_dir

    path = cache_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path
