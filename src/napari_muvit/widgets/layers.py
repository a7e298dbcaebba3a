"""The one layer builder: world coordinates -> napari layers.

World coordinates are level-1 (full resolution) pixel units (see docs/architecture.md). A level of
downsample factor ``f`` is shown with ``scale = f * pixel_size`` and ``translate = (f - 1) / 2 * pixel_size``
so pixel centres line up across levels. Vector layers (points, shapes) hold their vertices in world pixels
and get ``scale = pixel_size``, so their data can be exported as slide pixel coordinates unchanged.

Every builder returns a napari ``LayerDataTuple`` ``(data, kwargs, layer_type)`` whose ``metadata["muvit"]``
records ``pixel_size``, ``unit``, ``level`` and ``kind``; `layer_updates.add_or_update` puts it in a viewer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

META_KEY = "muvit"
# one distinct colour per level for crop outlines (finest first)
LEVEL_COLORS = ("#ffd700", "#00e5ff", "#ff4df0", "#7cff4d", "#ff8c1a", "#ffffff")
CHANNEL_COLORMAPS = ("green", "magenta", "cyan", "yellow", "red", "blue")


def _per_axis(value, ndim: int) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.size == 1:
        return np.full(ndim, float(arr[0]))
    if arr.size != ndim:
        raise ValueError(f"expected 1 or {ndim} values per axis, got {arr.size}")
    return arr


def level_transform(level, pixel_size=None, ndim: int = 2, origin=0.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """napari ``(scale, translate)`` for an array whose pixels are ``level``-downsampled.

    ``level``: downsample factor (scalar or one per spatial axis); ``pixel_size``: physical size of a
    level-1 pixel per spatial axis (None = 1, i.e. napari world = level-1 pixels); ``origin``: world px
    where the array's pixel 0 starts (e.g. the corner of a predicted region), 0 for a whole slide.
    """
    f = _per_axis(level, ndim)
    ps = _per_axis(1.0 if pixel_size is None else pixel_size, ndim)
    scale = f * ps
    from napari_muvit.data.geometry import level_translation

    translate = level_translation(f, ps, _per_axis(origin, ndim))
    return tuple(float(s) for s in scale), tuple(float(t) for t in translate)


def world_to_napari(world, pixel_size=None) -> np.ndarray:
    """World pixels ``(..., ndim)`` -> napari world units (times the physical pixel size)."""
    world = np.asarray(world, dtype=float)
    return world * _per_axis(1.0 if pixel_size is None else pixel_size, world.shape[-1])


def napari_to_world(coords, pixel_size=None) -> np.ndarray:
    """napari world units ``(..., ndim)`` -> world pixels."""
    coords = np.asarray(coords, dtype=float)
    return coords / _per_axis(1.0 if pixel_size is None else pixel_size, coords.shape[-1])


def layer_pixel_size(layer) -> tuple[float, ...] | None:
    """The level-1 pixel size a layer was built with (None when not built here)."""
    meta = getattr(layer, "metadata", {}) or {}
    ps = (meta.get(META_KEY) or {}).get("pixel_size")
    return None if ps is None else tuple(float(p) for p in ps)


def _meta(kind: str, level, pixel_size, unit, extra: Mapping | None = None) -> dict:
    info = {
        "kind": kind,
        "level": level,
        "pixel_size": None if pixel_size is None else [float(p) for p in np.atleast_1d(pixel_size)],
        "unit": unit,
    }
    info.update(extra or {})
    return {META_KEY: info}


def _units(unit, ndim):
    return None if not unit else (unit,) * ndim


def _levels_list(data) -> list:
    """A single array or a coarse-to-fine-ordered list -> list of arrays (finest first)."""
    if isinstance(data, (list, tuple)):
        return list(data)
    return [data]


def _multiscale_data(arrays: list):
    return arrays if len(arrays) > 1 else arrays[0]


# ----------------------------------------------------------------------------------------- images
def _contrast_limits(arrays: list, rgb: bool, dtype=None):
    """Contrast from the coarsest level (small); dtype range when it is still big. ``dtype``: the
    slide's own (coarse levels computed on the fly are float)."""
    coarse = arrays[-1]
    dtype = np.dtype(dtype or arrays[0].dtype)
    if dtype == np.uint8:
        return (0.0, 255.0)
    if int(np.prod(coarse.shape)) > 4_000_000:
        if np.issubdtype(dtype, np.integer):
            return (float(np.iinfo(dtype).min), float(np.iinfo(dtype).max))
        return (0.0, 1.0)
    values = np.asarray(coarse)
    lo, hi = np.percentile(values, (0.5, 99.8))
    return (float(lo), float(hi if hi > lo else lo + 1))


def image_layers(pyramid, name: str | None = None, source: str | None = None, colormaps=None) -> list[tuple]:
    """A ``Pyramid`` -> one multiscale image layer (RGB or one channel) or one per channel.

    Channels-first pyramid arrays ``(C, [Z,] Y, X)``; RGB pyramids are shown channels-last.
    ``metadata["muvit"]["source"]`` keeps the path so the widgets reopen the full pyramid.
    """
    ndim = int(pyramid.spatial_ndim)
    level0 = pyramid.factors[0] if getattr(pyramid, "factors", None) else 1
    scale, translate = level_transform(level0, pyramid.pixel_size, ndim)
    name = name or pyramid.name or "image"
    meta = _meta("image", level0, pyramid.pixel_size, pyramid.unit,
                 {"source": source, "levels": [float(f) for f in pyramid.level_factors]})
    common = {"scale": scale, "translate": translate, "units": _units(pyramid.unit, ndim), "metadata": meta}
    arrays = list(pyramid.arrays)
    if pyramid.rgb:
        rgb_arrays = [a.transpose(*range(1, a.ndim), 0) for a in arrays]
        kwargs = dict(common, name=name, rgb=True, multiscale=len(arrays) > 1,
                      contrast_limits=_contrast_limits(rgb_arrays, True, pyramid.dtype))
        return [(_multiscale_data(rgb_arrays), kwargs, "image")]
    n = int(pyramid.n_channels)
    if n == 1:
        data = [a[0] for a in arrays]
        kwargs = dict(common, name=name, multiscale=len(arrays) > 1, colormap="gray",
                      contrast_limits=_contrast_limits(data, False, pyramid.dtype))
        return [(_multiscale_data(data), kwargs, "image")]
    names = list(pyramid.channel_names or [f"ch{c}" for c in range(n)])
    colormaps = colormaps or [CHANNEL_COLORMAPS[c % len(CHANNEL_COLORMAPS)] for c in range(n)]
    out = []
    for c in range(n):
        data = [a[c] for a in arrays]
        kwargs = dict(common, name=f"{name} [{names[c]}]", multiscale=len(arrays) > 1,
                      colormap=colormaps[c], blending="additive",
                      contrast_limits=_contrast_limits(data, False, pyramid.dtype))
        kwargs["metadata"] = {META_KEY: dict(meta[META_KEY], channel=c)}
        out.append((_multiscale_data(data), kwargs, "image"))
    return out


# ---------------------------------------------------------------------------------------- outputs
def class_color(colors, k: int) -> str:
    """Colour of class ``k`` as ``#rrggbb``: ``colors[k]`` (a model card's or a store's, any notation the
    card accepts), else the engine's class palette, the one prediction stores fill missing colours from."""
    from napari_muvit.data.colors import class_hex

    return class_hex(colors, k)


def label_colormap(class_names, class_colors=None) -> dict:
    """Labels colormap ``{value: colour}`` for label images whose value ``v`` is class ``v - 1`` (0 = not
    predicted / not painted): ``class_names`` and ``class_colors`` are indexed by class. Classes called
    background (and 0) are see-through, so the tissue under them stays visible."""
    from napari_muvit.engine.rois import is_background

    colors: dict = {None: "transparent", 0: "transparent"}
    for k, name in enumerate(class_names):
        colors[k + 1] = "transparent" if is_background(name) else class_color(class_colors, k)
    return colors


def labels_layer(data, level=1, pixel_size=None, unit=None, name="MuViT labels", class_names=None,
                 class_colors=None, origin=0.0, extra_meta: Mapping | None = None) -> tuple:
    """Integer class map ``(Y, X)`` (or finest-first multiscale list) at downsample ``level`` -> Labels.

    ``class_names`` / ``class_colors`` are indexed by label *value* (value 0 first, e.g. "not predicted");
    a value whose name is background is see-through, the others get their colour (the engine's class
    palette where none is given), so a run's labels have the same colours from the first preview on.
    """
    arrays = _levels_list(data)
    ndim = arrays[0].ndim
    scale, translate = level_transform(level, pixel_size, ndim, origin)
    kwargs: dict[str, Any] = {
        "name": name, "scale": scale, "translate": translate, "units": _units(unit, ndim),
        "multiscale": len(arrays) > 1, "opacity": 0.5,
        "metadata": _meta("labels", level, pixel_size, unit, dict(extra_meta or {}, class_names=class_names)),
    }
    if class_names and len(class_names) > 1:
        colors = list(class_colors or [])[1:]  # by class: value v is class v - 1
        kwargs["colormap"] = label_colormap(list(class_names)[1:], colors)
    elif class_colors:
        kwargs["colormap"] = {None: "transparent", 0: "transparent",
                              **{k: c for k, c in enumerate(class_colors) if k > 0}}
    return (_multiscale_data(arrays), kwargs, "labels")


def class_colormap(color: str, name: str):
    """A napari colormap from see-through (probability 0) to ``color`` (probability 1): one per class, so
    the heatmaps of several classes can be told apart and the slide shows where a class is unlikely."""
    from napari.utils.colormaps import Colormap

    rgb = [int(color.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    return Colormap(colors=[[*rgb, 0.0], [*rgb, 1.0]], name=f"muvit {name} {color}", display_name=name)


def probability_layers(data, level=1, pixel_size=None, unit=None, class_names=None, prefix="MuViT p",
                       skip_background=True, origin=0.0, extra_meta: Mapping | None = None,
                       class_colors=None) -> list[tuple]:
    """Class probabilities ``(K, Y, X)`` (or finest-first multiscale list) -> one heatmap layer per class,
    each in its class colour (``class_colors`` by class, else the engine's class palette), see-through
    where the probability is 0.

    Values are probabilities in [0, 1] (uint8 stores are 0..255, shown with matching contrast limits).
    """
    from napari_muvit.engine.rois import is_background

    arrays = _levels_list(data)
    k_classes = int(arrays[0].shape[0])
    ndim = arrays[0].ndim - 1
    scale, translate = level_transform(level, pixel_size, ndim, origin)
    names = list(class_names or [str(k) for k in range(k_classes)])
    top = 255.0 if np.dtype(arrays[0].dtype) == np.uint8 else 1.0
    out = []
    for k in range(k_classes):
        if skip_background and k_classes > 1 and is_background(names[k]):
            continue
        color = class_color(class_colors, k)
        kwargs = {
            "name": f"{prefix}({names[k]})", "scale": scale, "translate": translate,
            "units": _units(unit, ndim), "multiscale": len(arrays) > 1,
            "colormap": class_colormap(color, names[k]),
            "contrast_limits": (0.0, top), "blending": "translucent", "opacity": 0.7,
            "metadata": _meta("probability", level, pixel_size, unit,
                              dict(extra_meta or {}, class_index=k, color=color)),
        }
        out.append((_multiscale_data([a[k] for a in arrays]), kwargs, "image"))
    return out


def rgb_overview_layer(data, level=1, pixel_size=None, unit=None, name="MuViT features (PCA)", origin=0.0,
                       extra_meta: Mapping | None = None) -> tuple:
    """Three channels ``(3, Y, X)`` in [0, 1] (or a finest-first multiscale list) -> one RGB layer, e.g.
    the PCA colours of encoder features."""
    arrays = [a.transpose(1, 2, 0) for a in _levels_list(data)]
    scale, translate = level_transform(level, pixel_size, 2, origin)
    kwargs = {
        "name": name, "scale": scale, "translate": translate, "units": _units(unit, 2), "rgb": True,
        "multiscale": len(arrays) > 1, "contrast_limits": (0.0, 1.0), "opacity": 0.7,
        "metadata": _meta("features", level, pixel_size, unit, extra_meta),
    }
    return (_multiscale_data(arrays), kwargs, "image")


def _features(features) -> dict:
    if features is None:
        return {}
    if hasattr(features, "to_dict"):  # pandas DataFrame
        return {c: np.asarray(features[c]) for c in features.columns}
    return {k: np.asarray(v) for k, v in dict(features).items()}


def roi_points_layer(centers_yx, features=None, pixel_size=None, unit=None, name="MuViT ROIs",
                     size_px: float = 32.0, extra_meta: Mapping | None = None) -> tuple:
    """ROI centres ``(N, 2)`` world px with a features table (e.g. score, rank) -> Points."""
    centers = np.asarray(centers_yx, dtype=float).reshape(-1, 2)
    scale, _ = level_transform(1, pixel_size, 2)
    feats = _features(features)
    kwargs = {
        "name": name, "scale": scale, "units": _units(unit, 2), "features": feats, "size": size_px,
        "face_color": "transparent", "border_color": "#00ff88", "border_width": 0.15,
        "metadata": _meta("rois", 1, pixel_size, unit, extra_meta),
    }
    if "rank" in feats:
        kwargs["text"] = {"string": "{rank}", "color": "#00ff88", "anchor": "upper_left", "size": 10}
    return (centers, kwargs, "points")


def roi_polygons_layer(polygons, features=None, pixel_size=None, unit=None, name="MuViT ROIs",
                       extra_meta: Mapping | None = None) -> tuple:
    """Ranked ROI outlines (each ``(n, 2)`` vertices, world px in the pixel-centre frame) with a features
    table -> Shapes polygons; the rank is written beside each when the features hold one."""
    scale, _ = level_transform(1, pixel_size, 2)
    feats = _features(features)
    kwargs = {
        "name": name, "scale": scale, "units": _units(unit, 2), "shape_type": "polygon", "features": feats,
        "edge_color": "#00ff88", "face_color": "transparent", "edge_width": 2.0,
        "metadata": _meta("rois", 1, pixel_size, unit, extra_meta),
    }
    if "rank" in feats:
        kwargs["text"] = {"string": "{rank}", "color": "#00ff88", "anchor": "upper_left", "size": 10}
    return ([np.asarray(p, dtype=float) for p in polygons], kwargs, "shapes")


def attention_map_layer(data, level, cell, origin, contrast_limits, colormap, pixel_size=None,
                        name="MuViT attention") -> tuple:
    """One level's attention map ``(h, w)`` (one value per token) -> Image: token ``(0, 0)`` centred on world
    ``origin`` ``(y, x)``, one token every ``cell`` world px (`engine.attention` placement)."""
    kwargs = {
        "name": name, "scale": tuple(world_to_napari(cell, pixel_size)),
        "translate": tuple(world_to_napari(origin, pixel_size)), "colormap": colormap, "opacity": 0.8,
        "blending": "translucent", "contrast_limits": contrast_limits,
        "metadata": {META_KEY: {"kind": "attention", "level": int(level),
                                "cell": np.asarray(cell, dtype=float).tolist()}},
    }
    return (np.asarray(data, dtype=np.float32), kwargs, "image")


def query_marker_layer(point_yx, size: float, pixel_size=None, name="MuViT query") -> tuple:
    """The probed token: a hollow cyan square of ``size`` world px centred on ``point_yx`` -> Points."""
    scale, _ = level_transform(1, pixel_size, 2)
    kwargs = {"name": name, "scale": scale, "symbol": "square", "size": size, "face_color": "transparent",
              "border_color": "cyan", "border_width": 0.15}
    return (np.asarray(point_yx, dtype=float).reshape(1, 2), kwargs, "points")


def reconstruction_layer(recon, level, bbox, pixel_size=None, name=None) -> tuple:
    """An MAE reconstruction ``(C, h, w)`` of one level's crop (``bbox``: its first / last pixel centres, world
    px) -> Image at the crop's place (RGB when ``C == 3``; contrast from the 1st / 99th percentile)."""
    from napari_muvit.data.geometry import pixel_corner

    recon = np.asarray(recon)
    rgb = recon.shape[0] == 3
    data = (np.moveaxis(recon, 0, -1) if rgb else recon[0]).astype(np.float32)
    origin = pixel_corner(np.asarray(bbox[0], dtype=float), level)  # the first pixel's outer edge
    scale, translate = level_transform(level, pixel_size, 2, origin=origin)
    finite = data[np.isfinite(data)]
    limits = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99) + 1e-6))
    kwargs = {"name": name or f"MAE reconstruction x{level}", "scale": scale, "translate": translate, "rgb": rgb,
              "contrast_limits": limits, "metadata": {META_KEY: {"kind": "reconstruction", "level": int(level)}}}
    if not rgb:
        kwargs["colormap"] = "gray"
    return (data, kwargs, "image")


def rectangle(y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """Corners ``(4, 2)`` of an axis-aligned rectangle (y, x)."""
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


def roi_shapes_layer(boxes, features=None, pixel_size=None, unit=None, name="MuViT ROI boxes",
                     extra_meta: Mapping | None = None) -> tuple:
    """ROI boxes ``(N, 4)`` ``(y0, x0, y1, x1)`` world px (pixel edges) with features -> Shapes."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    scale, _ = level_transform(1, pixel_size, 2)
    kwargs = {
        "name": name, "scale": scale, "units": _units(unit, 2), "shape_type": "rectangle",
        "features": _features(features), "edge_color": "#00ff88", "face_color": "transparent",
        "edge_width": 2.0, "metadata": _meta("rois", 1, pixel_size, unit, extra_meta),
    }
    return ([rectangle(*b) for b in boxes], kwargs, "shapes")


def bbox_edges(bbox, level) -> tuple[float, float, float, float]:
    """Crop bbox ``[[y_first, x_first], [y_last, x_last]]`` (pixel centres, world px) at downsample
    ``level`` -> the outline ``(y0, x0, y1, x1)`` at the outer pixel edges."""
    bbox = np.asarray(bbox, dtype=float)
    half = _per_axis(level, 2) / 2.0
    return (bbox[0, 0] - half[0], bbox[0, 1] - half[1], bbox[1, 0] + half[0], bbox[1, 1] + half[1])


def crop_outlines_layer(bboxes, levels: Sequence, pixel_size=None, unit=None, name="MuViT context",
                        extra_meta: Mapping | None = None) -> tuple:
    """Nested model crops ``(L, 2, 2)`` (one per level, world px pixel centres) -> Shapes outlines,
    one colour per level, with a ``level`` feature."""
    bboxes = np.asarray(bboxes, dtype=float).reshape(-1, 2, 2)
    if len(levels) != len(bboxes):
        raise ValueError(f"{len(bboxes)} crop boxes but {len(levels)} levels were given")
    scale, _ = level_transform(1, pixel_size, 2)
    rects = [rectangle(*bbox_edges(b, f)) for b, f in zip(bboxes, levels)]
    colors = [LEVEL_COLORS[i % len(LEVEL_COLORS)] for i in range(len(levels))]
    kwargs = {
        "name": name, "scale": scale, "units": _units(unit, 2), "shape_type": "rectangle",
        "edge_color": colors, "face_color": "transparent", "edge_width": 2.0,
        "features": {"level": np.asarray([float(f) for f in levels])},
        "text": {"string": "x{level:g}", "color": "white", "anchor": "upper_left", "size": 9},
        "metadata": _meta("crops", 1, pixel_size, unit, extra_meta),
    }
    return (rects, kwargs, "shapes")
