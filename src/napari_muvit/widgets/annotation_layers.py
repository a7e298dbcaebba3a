"""QuPath annotations <-> napari Shapes layers placed on the slide.

* `read_annotations(path)`: the plugin's reader for ``.geojson`` files: one Shapes layer of the file's polygon
  annotations (exteriors and holes as outlines, coloured by class; features ``name``, ``class``, ``hole``,
  ``region``), in world px (`data.qupath` converts QuPath's pixel edges once) with ``scale`` = the slide's
  pixel size and ``translate`` = its translation, taken from the napari-muvit slide open in the viewer (so
  the outlines sit on it; pixels when none is open).
* `regions_from_shapes(layer)`: a Shapes layer (drawn by hand, or read here) -> `data.regions.Region` list
  in world px, for `engine.measure` and `data.regions.label_image` / `region_mask`. A layer read from a
  file keeps its annotations (holes included); drawn polygons, rectangles and ellipses become one region each.

Saving a Shapes layer as ``.geojson`` (the plugin's writer) gives QuPath the same pixel-edge coordinates back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_muvit.data.geometry import slide_translation

from .layers import META_KEY, _meta

DEFAULT_EDGE = "#ffff00"


def _slide_frame() -> tuple[np.ndarray | None, np.ndarray, str | None]:
    """``(pixel size (y, x) or None, translation (y, x), unit)`` of the first napari-muvit slide in the viewer."""
    try:
        import napari
        from napari.layers import Image

        viewer = napari.current_viewer()
    except Exception:  # headless: world px
        return None, np.zeros(2), None
    for layer in list(getattr(viewer, "layers", []) or []):
        info = (getattr(layer, "metadata", {}) or {}).get(META_KEY) or {}
        if info.get("kind") != "image" or not isinstance(layer, Image):
            continue
        ps = None if info.get("pixel_size") is None else np.asarray(info["pixel_size"], float)[-2:]
        f0 = float(np.atleast_1d(info.get("level", 1))[0])
        # a slide layer's translate = slide translation + (f0 - 1) / 2 * pixel size (widgets.layers)
        t = slide_translation(np.asarray(layer.translate, float)[-2:], f0, ps)
        return ps, t, info.get("unit")
    return None, np.zeros(2), None


def annotation_layer(regions, name: str, pixel_size=None, translation=(0.0, 0.0), unit=None,
                     source: str | None = None) -> tuple:
    """A Shapes layer tuple of `Region` objects (world px data, slide ``scale``/``translate``)."""
    data, names, classes, holes, index, colors = [], [], [], [], [], []
    for i, region in enumerate(regions):
        color = "#{:02x}{:02x}{:02x}".format(*region.color[:3]) if region.color else DEFAULT_EDGE
        for rings in region.polygons:
            for j, ring in enumerate(rings):
                data.append(np.asarray(ring, dtype=float))
                names.append(region.name)
                classes.append(region.classification or "")
                holes.append(j > 0)
                index.append(i)
                colors.append(color)
    ps = np.ones(2) if pixel_size is None else np.asarray(pixel_size, float)[-2:]
    extra = {"source": source, "annotations": True}
    kwargs = {
        "name": name, "shape_type": ["polygon"] * len(data), "edge_color": colors, "face_color": "transparent",
        "edge_width": 2.0, "scale": tuple(float(v) for v in ps),
        "translate": tuple(float(v) for v in np.asarray(translation, float)[-2:]),
        "features": {"name": names, "class": classes, "hole": holes, "region": index},
        "metadata": _meta("annotations", 1, None if pixel_size is None else ps, unit, extra)
        | {"regions": list(regions)},
    }
    if unit:
        kwargs["units"] = (unit, unit)
    return data, kwargs, "shapes"


def read_annotations(path) -> list[tuple]:
    """npe2 reader body for a QuPath GeoJSON file (see the module docstring)."""
    from napari_muvit.data.qupath import read_qupath

    if isinstance(path, list):
        path = path[0]
    regions = read_qupath(path)
    ps, t, unit = _slide_frame()
    return [annotation_layer(regions, f"{Path(path).stem} annotations", ps, t, unit, str(path))]


def regions_from_shapes(layer, name_prefix: str = "shape") -> list:
    """`Region` list (world px) of a Shapes layer; see the module docstring. Lines and paths are skipped."""
    from napari_muvit.data.regions import Region

    kept = (getattr(layer, "metadata", {}) or {}).get("regions")
    rings = [r for reg in kept or [] for rings in reg.polygons for r in rings]
    if kept and len(rings) == len(layer.data) and all(
            np.shape(a) == np.shape(b) and np.allclose(a, b) for a, b in zip(layer.data, rings)):
        return list(kept)  # read from a file and not edited: the annotations with their holes
    scale = np.asarray(layer.scale, float)[-2:]
    translate = np.asarray(layer.translate, float)[-2:]
    ps_slide, t_slide, _ = _slide_frame()
    if ps_slide is None:  # no slide open: the layer's own scale is the pixel size
        ps_slide, t_slide = scale, np.zeros(2)
    names = _feature(layer, "name")
    classes = _feature(layer, "class")
    regions = []
    for i, (shape, kind) in enumerate(zip(layer.data, layer.shape_type)):
        if kind in ("line", "path"):
            continue
        yx = np.asarray(shape, float)[:, -2:]
        world = ((yx * scale + translate) - t_slide) / ps_slide  # napari coordinates -> world px
        if kind == "ellipse":  # napari keeps the bounding box corners
            cy, cx = world.mean(axis=0)
            ry, rx = np.ptp(world[:, 0]) / 2, np.ptp(world[:, 1]) / 2
            t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            world = np.stack([cy + ry * np.sin(t), cx + rx * np.cos(t)], axis=1)
        name = str(names[i]) if names is not None and str(names[i]) else f"{name_prefix} {i + 1}"
        cls = str(classes[i]) if classes is not None and str(classes[i]) else None
        regions.append(Region(name, [[world]], classification=cls))
    return regions


def _feature(layer, column):
    features = getattr(layer, "features", None)
    if features is None or column not in getattr(features, "columns", []):
        return None
    return list(features[column])
