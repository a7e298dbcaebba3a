"""Write ranked ROIs as a QuPath-importable GeoJSON FeatureCollection or as a CSV table.

GeoJSON coordinates are ``[x, y]`` in level-1 pixels with pixel *edges* on integers (level-1 pixel ``j``
spans ``[j, j+1)``), which is how QuPath places objects; CSV centroids are world pixel-centre coordinates
(the project's frame) and bboxes half-open level-1 pixel ranges.

Every exported polygon is valid for GeoJSON (RFC 7946), shapely and JTS (QuPath): a closed ring of at
least 4 positions with a non-zero area that does not cross itself. A region whose outline is degenerate
(e.g. a single pixel, traced as a 3-position ring) is written as the rectangle of its pixel bbox instead;
an ROI with an empty bbox is left out. Classification colours are the store's class colours (the labels'
``image-label.colors``, else the class channels' ``omero`` colours, which come from the model card), so
the same class has the same colour in every file.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from ..data.colors import PALETTE, class_rgb, hex_to_rgb


def _atomic_write(path: Path, text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------- class colours
def store_class_colors(store) -> dict[str, list[int]]:
    """``class name -> [r, g, b]`` (0-255) as a prediction store records them (empty dict if it records none).

    Sources, first found wins per class: ``labels/prediction`` ``image-label`` colours (matched to
    ``properties[].class`` by label value), the image's ``omero`` channel colours (one channel per class),
    and the store's palette by class index (the colour the store itself would use).
    """
    import zarr

    try:
        root = zarr.open_group(str(store), mode="r")
    except Exception:
        return {}
    out: dict[str, list[int]] = {}

    def ome(group) -> dict:
        attrs = dict(group.attrs)
        return dict(attrs.get("ome", attrs))

    try:
        label = ome(root["labels/prediction"]).get("image-label") or {}
        by_value = {int(c["label-value"]): c.get("rgba") for c in label.get("colors") or []}
        for prop in label.get("properties") or []:
            rgba = by_value.get(int(prop["label-value"]))
            if prop.get("class") is not None and rgba:
                out.setdefault(str(prop["class"]), [int(v) for v in list(rgba)[:3]])
    except Exception:  # no labels group (classification, features) or other layouts
        pass
    for ch in (ome(root).get("omero") or {}).get("channels") or []:
        color = str(ch.get("color") or "")
        if ch.get("label") is not None and len(color.lstrip("#")) >= 6:
            out.setdefault(str(ch["label"]), hex_to_rgb(color))
    meta = dict(root.attrs.get("napari_muvit", {}))
    for k, name in enumerate(meta.get("class_names") or []):
        out.setdefault(str(name), list(class_rgb(None, k)))
    return out


def _fallback_color(name: str) -> list[int]:
    """A colour for a class the store does not name: stable per name (not per file)."""
    import zlib

    return list(class_rgb(None, zlib.crc32(str(name).encode()) % len(PALETTE)))


# ---------------------------------------------------------------------------------------- geometry
def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _segments_cross(p1, p2, q1, q2) -> bool:
    def orient(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    o1, o2, o3, o4 = orient(p1, p2, q1), orient(p1, p2, q2), orient(q1, q2, p1), orient(q1, q2, p2)
    if o1 != o2 and o3 != o4 and 0 not in (o1, o2, o3, o4):
        return True
    # touching or collinear overlaps also make an invalid ring: check bounding-box overlap of collinear parts
    def on(a, b, c):
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    return (o1 == 0 and on(p1, p2, q1)) or (o2 == 0 and on(p1, p2, q2)) or (o3 == 0 and on(q1, q2, p1)) or (
        o4 == 0 and on(q1, q2, p2))


def _is_simple(ring: np.ndarray) -> bool:
    """Whether a closed ring (first == last) has no self-intersection (adjacent edges share one vertex)."""
    n = len(ring) - 1
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # adjacent edges
            if _segments_cross(ring[i], ring[i + 1], ring[j], ring[j + 1]):
                return False
    return True


def valid_ring(polygon_xy) -> list[list[float]] | None:
    """``polygon_xy`` as a valid closed GeoJSON ring (``[[x, y], ...]``, >= 4 positions, counter-clockwise
    in x-right / y-up terms as RFC 7946 asks, non-zero area, simple), or None when it cannot be one."""
    pts = np.asarray(polygon_xy, dtype=float).reshape(-1, 2)
    if len(pts) == 0 or not np.all(np.isfinite(pts)):
        return None
    keep = np.ones(len(pts), bool)
    keep[1:] = np.any(np.diff(pts, axis=0) != 0, axis=1)  # drop repeated positions
    pts = pts[keep]
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    if len(pts) < 3:
        return None
    ring = np.vstack([pts, pts[:1]])
    area = _ring_area(ring)
    if abs(area) < 1e-9 or not _is_simple(ring):
        return None
    if area < 0:  # RFC 7946: exterior rings counter-clockwise
        ring = ring[::-1]
    return ring.tolist()


def _bbox_ring(bbox) -> list[list[float]] | None:
    y0, y1, x0, x1 = (float(v) for v in bbox)
    if not (y1 > y0 and x1 > x0):
        return None
    return valid_ring([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def roi_ring(roi) -> list[list[float]] | None:
    """The ROI's GeoJSON ring: its outline when valid, else its bbox rectangle, else None (left out)."""
    ring = valid_ring([[x, y] for y, x in roi.polygon_yx]) if len(roi.polygon_yx) else None
    return ring if ring is not None else _bbox_ring(roi.bbox)


# ------------------------------------------------------------------------------------------ writers
def rois_to_geojson(rois, score_name: str = "score", class_colors: dict | None = None) -> dict:
    """ROIs -> a FeatureCollection. ``class_colors``: ``name -> [r, g, b]`` (e.g. `store_class_colors`)."""
    colors = dict(class_colors or {})
    features = []
    for r in rois:
        ring = roi_ring(r)
        if ring is None:
            continue
        color = colors.get(r.classification) or _fallback_color(r.classification)
        features.append({
            "type": "Feature",
            "id": f"roi-{r.rank}",
            "geometry": {"type": "Polygon", "coordinates": [[[float(x), float(y)] for x, y in ring]]},
            "properties": {
                "objectType": "annotation",
                "name": f"ROI {r.rank}",
                "classification": {"name": r.classification, "color": [int(v) for v in color]},
                "score": float(r.score),
                "score_name": score_name,
                "rank": int(r.rank),
                "measurements": {"score": float(r.score), "rank": int(r.rank), "area_px": float(r.area)},
            },
        })
    return {"type": "FeatureCollection", "features": features}


def export_geojson(rois, path, score_name: str = "score", class_colors: dict | None = None) -> Path:
    return _atomic_write(Path(path), json.dumps(rois_to_geojson(rois, score_name, class_colors), indent=1))


def export_csv(rois, path) -> Path:
    from .safety import csv_cell  # class names never start a spreadsheet formula

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "score", "centroid_y", "centroid_x", "bbox_y0", "bbox_y1", "bbox_x0", "bbox_x1",
                    "classification", "area_px", "tile_index"])
        for r in rois:
            w.writerow([r.rank, f"{r.score:.6g}", f"{r.centroid_yx[0]:.2f}", f"{r.centroid_yx[1]:.2f}",
                        *(f"{v:g}" for v in r.bbox), csv_cell(r.classification), f"{r.area:g}",
                        "" if r.tile_index is None else r.tile_index])
    os.replace(tmp, path)
    return path


def export_rois(rois, path, score_name: str = "score", class_colors=None) -> Path:
    """By suffix: ``.geojson``/``.json`` -> GeoJSON, ``.csv`` -> CSV.

    ``class_colors``: ``name -> [r, g, b]``, or the prediction store (path) to read them from.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".geojson", ".json"):
        if class_colors is not None and not isinstance(class_colors, dict):
            class_colors = store_class_colors(class_colors)
        return export_geojson(rois, path, score_name, class_colors)
    if suffix == ".csv":
        return export_csv(rois, path)
    raise ValueError(f"export file {str(path)!r} must end in .geojson or .csv.")
