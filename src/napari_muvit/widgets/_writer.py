"""npe2 writers: Labels -> OME-Zarr; Shapes/Points -> GeoJSON or CSV, in slide (world) pixels.

Vector coordinates are written in slide pixels (level-1 pixel units, y down, x right):
``world = (data * scale + translate) / pixel_size`` where ``pixel_size`` is the one the layer was built
with (``metadata["muvit"]``); layers from elsewhere are written in their napari world units.
GeoJSON positions are ``[x, y]`` with pixel *edges* on integers (QuPath's frame, the same as the engine's
ROI export: ``+0.5`` from napari's pixel-centre frame); CSV holds pixel-centre coordinates (the project's
world frame), with named columns.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from napari_muvit.engine import safety

from .layers import META_KEY

LABEL_CHUNK = 1024
QUPATH_SHIFT = 0.5  # pixel-centre frame -> pixel-edge frame (QuPath, engine GeoJSON)


def _world_px(data: np.ndarray, meta: dict) -> np.ndarray:
    """Layer data ``(N, D)`` -> world pixels ``(N, 2)`` of the last two (y, x) axes."""
    data = np.asarray(data, dtype=float)
    ndim = data.shape[-1]
    scale = np.asarray(meta.get("scale", np.ones(ndim)), dtype=float)[-ndim:]
    translate = np.asarray(meta.get("translate", np.zeros(ndim)), dtype=float)[-ndim:]
    world = data * scale + translate
    ps = ((meta.get("metadata") or {}).get(META_KEY) or {}).get("pixel_size")
    if ps is not None:
        world = world / np.asarray(ps, dtype=float)[-ndim:]
    return world[..., -2:]


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
    world_yx = world_yx + QUPATH_SHIFT
    xy = world_yx[:, ::-1].round(3).tolist()
    if shape_type in ("path", "line"):
        return {"type": "LineString", "coordinates": xy}
    if shape_type == "ellipse":  # napari stores the 4 corners of the bounding box
        cy, cx = world_yx.mean(axis=0)
        ry, rx = np.ptp(world_yx[:, 0]) / 2, np.ptp(world_yx[:, 1]) / 2
        t = np.linspace(0, 2 * np.pi, 65)
        xy = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1).round(3).tolist()
        return {"type": "Polygon", "coordinates": [xy]}
    return {"type": "Polygon", "coordinates": [xy + [xy[0]]]}


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
    chunk by chunk (never the whole slide in memory). Refuses to overwrite an existing path."""
    import dask.array as da

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{str(path)!r} already exists; choose a new name for the labels store.")
    _check_target(path, meta)
    base = data[0] if isinstance(data, (list, tuple)) else data
    base = da.asarray(base)
    ndim = base.ndim
    scale = np.asarray(meta.get("scale", np.ones(ndim)), dtype=float)
    translate = np.asarray(meta.get("translate", np.zeros(ndim)), dtype=float)
    levels = [base]
    while min(levels[-1].shape[-2:]) > 512 and len(levels) < 8:  # stride-2 keeps label values exact
        levels.append(levels[-1][(slice(None),) * (ndim - 2) + (slice(None, None, 2), slice(None, None, 2))])
    with safety.atomic_folder(path) as tmp:  # built beside the target, renamed into place when complete
        _write_label_levels(tmp, levels, scale, translate, meta)
    return [str(path)]


def _write_label_levels(path: Path, levels: list, scale: np.ndarray, translate: np.ndarray, meta: dict) -> None:
    import dask.array as da
    import zarr

    ndim = levels[0].ndim
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    axes = [{"name": n, "type": "space"} for n in "zyx"[-ndim:]]
    datasets = []
    for i, arr in enumerate(levels):
        f = np.ones(ndim)
        f[-2:] = 2**i
        chunks = tuple(min(LABEL_CHUNK, n) for n in arr.shape)
        target = root.create_array(str(i), shape=arr.shape, dtype=arr.dtype, chunks=chunks, fill_value=0)
        da.store(arr.rechunk(chunks), target, lock=False)
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": (scale * f).tolist()},
            {"type": "translation", "translation": (translate + (f - 1) / 2 * scale).tolist()},
        ]})
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"name": meta.get("name") or "labels", "axes": axes, "datasets": datasets}],
        "image-label": {"version": "0.5"},
    }
