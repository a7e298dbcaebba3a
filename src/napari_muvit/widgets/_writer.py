"""npe2 writers: Labels -> OME-Zarr; Shapes/Points -> GeoJSON or CSV, in slide (world) pixels.

Vector coordinates are written in slide pixels (level-1 pixel units, y down, x right). A layer's napari
world position ``data * scale + translate`` (physical units when the slide has a pixel size) is turned into
slide pixels with the slide's frame: ``(world - slide translation) / slide pixel size``. The slide frame is
that of the napari-muvit slide layer open in the viewer (its pixel size and its translate), so layers
made with napari's own "new layer" buttons (which copy the slide's scale, not its metadata) are written in
slide pixels too; without a slide layer, the pixel size the layer was built with (``metadata["muvit"]``)
is used, and a layer in physical units with neither is refused rather than written as pixels.
GeoJSON positions are ``[x, y]`` with pixel *edges* on integers (QuPath's frame, the same as the engine's
ROI export: ``+0.5`` from napari's pixel-centre frame); CSV holds pixel-centre coordinates (the project's
world frame), with named columns.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from napari_muvit.data.geometry import slide_translation
from napari_muvit.engine import safety

from .layers import META_KEY

LABEL_CHUNK = 1024
QUPATH_SHIFT = 0.5  # pixel-centre frame -> pixel-edge frame (QuPath, engine GeoJSON)


PIXEL_UNITS = ("", "pixel", "pixels", "px", "none")


def _is_physical(units) -> bool:
    """Whether napari layer ``units`` name a physical unit (micrometre, ...) rather than pixels."""
    if units is None:
        return False
    units = [units] if isinstance(units, str) else list(units)
    return any(str(u).strip().lower() not in PIXEL_UNITS for u in units[-2:])


def _viewer_slide_frames() -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """``(pixel size (y, x), translation (y, x))`` of every napari-muvit slide image layer in the current viewer."""
    try:
        import napari
        from napari.layers import Image

        viewer = napari.current_viewer()
    except Exception:  # no Qt / no viewer: headless writes
        return []
    frames = []
    for layer in list(getattr(viewer, "layers", []) or []):
        info = (getattr(layer, "metadata", {}) or {}).get(META_KEY) or {}
        if info.get("kind") != "image" or not isinstance(layer, Image):
            continue
        ps = np.ones(2) if info.get("pixel_size") is None else np.asarray(info["pixel_size"], float)[-2:]
        f0 = np.asarray(np.broadcast_to(np.asarray(info.get("level", 1), float), (2,)))
        # the reader's image translate = slide translation + centre of level-f0 pixel 0 * pixel size
        t = slide_translation(np.asarray(layer.translate, float)[-2:], f0, ps)
        frame = (tuple(float(v) for v in ps), tuple(float(v) for v in t))
        if frame not in frames:
            frames.append(frame)
    return frames


def _slide_frame(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(pixel size, translation)`` (y, x) that turn this layer's napari world coordinates into slide pixels."""
    built = ((meta.get("metadata") or {}).get(META_KEY) or {}).get("pixel_size")
    built = None if built is None else tuple(float(v) for v in np.asarray(built, float)[-2:])
    frames = _viewer_slide_frames()
    if built is not None and len(frames) > 1:
        frames = [f for f in frames if np.allclose(f[0], built)] or frames
    if len(frames) == 1:
        return np.asarray(frames[0][0]), np.asarray(frames[0][1])
    name = meta.get("name") or "layer"
    if len(frames) > 1:
        raise ValueError(
            f"the viewer holds {len(frames)} slides with different pixel sizes or positions, so the slide pixels of "
            f"{name!r} are ambiguous; close the other slides and save again."
        )
    if built is not None:
        return np.asarray(built), np.zeros(2)
    scale = np.asarray(meta.get("scale", (1.0, 1.0)), float)[-2:]
    if _is_physical(meta.get("units")):
        raise ValueError(
            f"layer {name!r} is in {'/'.join(str(u) for u in np.atleast_1d(meta.get('units'))[-2:])} (scale "
            f"{tuple(float(v) for v in scale)}) and no napari-muvit slide is open to give the slide's pixel size; "
            "open the slide with napari-muvit and save again."
        )
    return np.ones(2), np.zeros(2)


def _world_px(data: np.ndarray, meta: dict) -> np.ndarray:
    """Layer data ``(N, D)`` -> slide (world) pixels ``(N, 2)`` of the last two (y, x) axes."""
    data = np.asarray(data, dtype=float)
    ndim = data.shape[-1]
    scale = np.asarray(meta.get("scale", np.ones(ndim)), dtype=float)[-ndim:]
    translate = np.asarray(meta.get("translate", np.zeros(ndim)), dtype=float)[-ndim:]
    world = (data * scale + translate)[..., -2:]
    ps, t = _slide_frame(meta)
    return (world - t) / ps


def _feature_rows(meta: dict, n: int) -> list[dict]:
    """Per-item JSON-able feature dicts (score, rank, ...)."""
    features = meta.get("features")
    if features is None or len(features) != n:
        return [{} for _ in range(n)]
    cols = list(features.columns)
    return [{c: _plain(features[c].iloc[i]) for c in cols} for i in range(n)]


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_target(path, meta: dict) -> None:
    """Never write over the layer's own source (the slide or label store it was read from)."""
    source = ((meta.get("metadata") or {}).get(META_KEY) or {}).get("source")
    if source:
        parts = Path(str(source)).parts
        root = [str(Path(*parts[: parts.index("labels")]))] if "labels" in parts[1:] else []
        safety.check_output_path(path, [str(source), *root])


def _is_shapes(meta: dict) -> bool:
    return "shape_type" in meta


# ---------------------------------------------------------------------------------------- GeoJSON
def _geometry(world_yx: np.ndarray, shape_type: str) -> dict:
    """A valid GeoJSON geometry: polygons are closed rings of >= 4 positions with an area and no self-crossing
    (`engine.export.valid_ring`); a polygon that cannot be one is written as the line of its outline (or a
    point), so nothing is dropped and nothing invalid is written."""
    from napari_muvit.engine.export import valid_ring

    world_yx = world_yx + QUPATH_SHIFT
    xy = world_yx[:, ::-1].round(3).tolist()
    if shape_type in ("path", "line"):
        return _line(xy)
    if shape_type == "ellipse":  # napari stores the 4 corners of the bounding box
        cy, cx = world_yx.mean(axis=0)
        ry, rx = np.ptp(world_yx[:, 0]) / 2, np.ptp(world_yx[:, 1]) / 2
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        xy = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1).round(3).tolist()
    ring = valid_ring(xy)
    if ring is not None:
        return {"type": "Polygon", "coordinates": [ring]}
    return _line(xy + [xy[0]] if len(xy) > 2 else xy)


def _line(xy: list) -> dict:
    """LineString of distinct consecutive positions, or a Point when there is only one."""
    pts = [p for i, p in enumerate(xy) if i == 0 or p != xy[i - 1]]
    if len(pts) < 2:
        return {"type": "Point", "coordinates": pts[0] if pts else [0.0, 0.0]}
    return {"type": "LineString", "coordinates": pts}


def write_geojson(path: str, data, meta: dict) -> list[str]:
    """Shapes (polygons, rectangles, ellipses, paths) or Points -> a GeoJSON FeatureCollection."""
    features = []
    if _is_shapes(meta):
        types = meta.get("shape_type") or ["polygon"] * len(data)
        props = _feature_rows(meta, len(data))
        for verts, shape_type, p in zip(data, types, props):
            features.append({"type": "Feature", "geometry": _geometry(_world_px(verts, meta), shape_type),
                             "properties": dict(p, shape_type=shape_type)})
    else:
        pts = _world_px(np.asarray(data).reshape(len(data), -1), meta) if len(data) else np.zeros((0, 2))
        for (y, x), p in zip(pts + QUPATH_SHIFT, _feature_rows(meta, len(pts))):
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(x, 3), round(y, 3)]},
                             "properties": p})
    doc = {"type": "FeatureCollection", "features": features,
           "properties": {"coordinates": "slide pixels (level 1), [x, y], pixel edges on integers",
                          "name": meta.get("name")}}
    _check_target(path, meta)
    safety.atomic_write_text(path, json.dumps(doc, indent=1))
    return [str(path)]


# -------------------------------------------------------------------------------------------- CSV
def write_csv(path: str, data, meta: dict) -> list[str]:
    """Points -> one row per point (``y, x`` world px + features); Shapes -> one row per shape with its
    bounding box and centroid in world px + features."""
    rows: list[dict] = []
    if _is_shapes(meta):
        types = meta.get("shape_type") or ["polygon"] * len(data)
        for i, (verts, shape_type, p) in enumerate(zip(data, types, _feature_rows(meta, len(data)))):
            w = _world_px(verts, meta)
            lo, hi, c = w.min(axis=0), w.max(axis=0), w.mean(axis=0)
            rows.append(dict(index=i, shape_type=shape_type, y_min=lo[0], x_min=lo[1], y_max=hi[0], x_max=hi[1],
                             centroid_y=c[0], centroid_x=c[1], **p))
    else:
        pts = _world_px(np.asarray(data).reshape(len(data), -1), meta) if len(data) else np.zeros((0, 2))
        for i, ((y, x), p) in enumerate(zip(pts, _feature_rows(meta, len(pts)))):
            rows.append(dict(index=i, y=y, x=x, **p))
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    if not columns:
        columns = ["index", "y_min", "x_min", "y_max", "x_max"] if _is_shapes(meta) else ["index", "y", "x"]
    _check_target(path, meta)
    with safety.atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: safety.csv_cell(round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
    return [str(path)]


# --------------------------------------------------------------------------------------- OME-Zarr
def write_labels_zarr(path: str, data, meta: dict) -> list[str]:
    """Labels -> an OME-Zarr v0.5 image-label store (level 0 + 2x nearest-neighbour levels), written
    chunk by chunk (never the whole slide in memory). Refuses to overwrite an existing path.

    A multiscale layer (e.g. a reopened prediction) is written from its finest level. The store is valid
    for ome-zarr-models and the NGFF 0.5 schemas: arrays carry ``dimension_names``, axes carry the layer's
    unit, datasets the layer's scale and translate (``data.geometry.ome_transforms``), and
    ``image-label.colors`` / ``properties`` the layer's colours and class names for every label value in it.
    """
    import dask.array as da

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{str(path)!r} already exists; choose a new name for the labels store.")
    _check_target(path, meta)
    if isinstance(data, (list, tuple)) or meta.get("multiscale") or type(data).__name__ == "MultiScaleData":
        data = data[0]  # the finest level; coarser ones are rebuilt below
    base = data if isinstance(data, da.Array) else da.from_array(data, chunks=_chunks(data))
    ndim = base.ndim
    scale = np.asarray(meta.get("scale", np.ones(ndim)), dtype=float)
    translate = np.asarray(meta.get("translate", np.zeros(ndim)), dtype=float)
    levels = [base]
    while min(levels[-1].shape[-2:]) > 512 and len(levels) < 8:  # stride-2 keeps label values exact
        levels.append(levels[-1][(slice(None),) * (ndim - 2) + (slice(None, None, 2), slice(None, None, 2))])
    with safety.atomic_folder(path) as tmp:  # built beside the target, renamed into place when complete
        _write_label_levels(tmp, levels, scale, translate, meta)
    return [str(path)]


def _chunks(data):
    chunks = getattr(data, "chunks", None)
    if isinstance(chunks, tuple) and all(isinstance(c, (int, np.integer)) for c in chunks):
        return tuple(int(c) for c in chunks)
    return "auto"


def _axis_unit(meta: dict) -> str | None:
    """The OME unit of the layer's spatial axes (napari ``units``), None for pixels."""
    units = meta.get("units")
    if not _is_physical(units):
        return None
    unit = str(list([units] if isinstance(units, str) else units)[-1])
    return {"um": "micrometer", "µm": "micrometer", "nm": "nanometer", "mm": "millimeter"}.get(unit, unit)


def _label_colors(meta: dict, values) -> dict[int, list[int]]:
    """Label value -> 0-255 RGBA (``image-label.colors``) for ``values`` (label values > 0) from the layer's colormap, when it has one."""
    from napari_muvit.data.colors import unit_rgba_to_255

    cmap = meta.get("colormap")
    out = []
    if cmap is None:
        return out
    color_dict = getattr(cmap, "color_dict", None)
    for v in values:
        try:
            if color_dict is not None and int(v) in color_dict:
                rgba = color_dict[int(v)]
            elif isinstance(cmap, dict):
                rgba = cmap.get(int(v))
                if rgba is None:
                    continue
                from napari.utils.colormaps.standardize_color import transform_color

                rgba = transform_color(rgba)[0]
            else:
                rgba = np.asarray(cmap.map(np.asarray([v])))[0]
        except Exception:  # an exotic colormap: readers then pick their own colours
            continue
        out.append((int(v), unit_rgba_to_255(rgba)))
    return dict(out)


def _write_label_levels(path: Path, levels: list, scale: np.ndarray, translate: np.ndarray, meta: dict) -> None:
    import dask
    import dask.array as da
    import zarr

    from napari_muvit.data.ome_metadata import image_label, multiscale, ome_attributes

    ndim = levels[0].ndim
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    unit = _axis_unit(meta)
    names = "zyx"[-ndim:] if ndim <= 3 else None
    if names is None:
        raise ValueError(f"labels with {ndim} dimensions cannot be saved; save a 2-D (Y, X) or 3-D (Z, Y, X) layer.")
    factors, writes, values = [], [], None
    for i, arr in enumerate(levels):
        f = np.ones(ndim)
        f[-2:] = 2**i
        chunks = tuple(min(LABEL_CHUNK, n) for n in arr.shape)
        target = root.create_array(str(i), shape=arr.shape, dtype=arr.dtype, chunks=chunks, fill_value=0,
                                   dimension_names=list(names))
        arr = arr.rechunk(chunks)
        writes.append(da.store(arr, target, lock=False, compute=False))
        if i == 0:
            values = da.unique(arr)  # computed with the level-0 write: one pass over the data
        factors.append(f)
    _, values = dask.compute(writes, values)
    values = [int(v) for v in np.asarray(values).tolist() if int(v) > 0]
    colors = _label_colors(meta, values)
    class_names = ((meta.get("metadata") or {}).get(META_KEY) or {}).get("class_names")
    # the plugin's labels are argmax + 1: value k + 1 is class k
    classes = {v: str(class_names[v - 1]) for v in values if 0 < v <= len(class_names)} if class_names else None
    # datasets carry the layer's scale and translate: pixel size = scale, slide translation = translate
    root.attrs["ome"] = ome_attributes(
        multiscale(meta.get("name") or "labels", factors, pixel_size=scale, unit=unit, origin_world=np.zeros(ndim),
                   translation=translate),
        image_label=image_label(colors=colors or None, classes=classes))
