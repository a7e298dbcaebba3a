"""Write ranked ROIs as a QuPath-importable GeoJSON FeatureCollection or as a CSV table.

GeoJSON coordinates are ``[x, y]`` in level-1 pixels with pixel *edges* on integers (level-1 pixel ``j``
spans ``[j, j+1)``), which is how QuPath places objects; CSV centroids are world pixel-centre coordinates
(the project's frame) and bboxes half-open level-1 pixel ranges.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def _atomic_write(path: Path, text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def rois_to_geojson(rois, score_name: str = "score") -> dict:
    names = sorted({r.classification for r in rois})
    colors = {n: list(_PALETTE[i % len(_PALETTE)]) for i, n in enumerate(names)}
    features = []
    for r in rois:
        ring = [[float(x), float(y)] for y, x in r.polygon_yx]
        features.append({
            "type": "Feature",
            "id": f"roi-{r.rank}",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "annotation",
                "name": f"ROI {r.rank}",
                "classification": {"name": r.classification, "color": colors[r.classification]},
                "score": float(r.score),
                "score_name": score_name,
                "rank": int(r.rank),
                "measurements": {"score": float(r.score), "rank": int(r.rank), "area_px": float(r.area)},
            },
        })
    return {"type": "FeatureCollection", "features": features}


def export_geojson(rois, path, score_name: str = "score") -> Path:
    return _atomic_write(Path(path), json.dumps(rois_to_geojson(rois, score_name), indent=1))


def export_csv(rois, path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "score", "centroid_y", "centroid_x", "bbox_y0", "bbox_y1", "bbox_x0", "bbox_x1",
                    "classification", "area_px", "tile_index"])
        for r in rois:
            w.writerow([r.rank, f"{r.score:.6g}", f"{r.centroid_yx[0]:.2f}", f"{r.centroid_yx[1]:.2f}",
                        *(f"{v:g}" for v in r.bbox), r.classification, f"{r.area:g}",
                        "" if r.tile_index is None else r.tile_index])
    os.replace(tmp, path)
    return path


def export_rois(rois, path, score_name: str = "score") -> Path:
    """By suffix: ``.geojson``/``.json`` -> GeoJSON, ``.csv`` -> CSV."""
    suffix = Path(path).suffix.lower()
    if suffix in (".geojson", ".json"):
        return export_geojson(rois, path, score_name)
    if suffix == ".csv":
        return export_csv(rois, path)
    raise ValueError(f"export file {str(path)!r} must end in .geojson or .csv.")
