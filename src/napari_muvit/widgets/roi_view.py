"""Ranked ROIs of a prediction store -> a Shapes layer with a features table, ROI list rows, exports.

Ranking and the export formats belong to the engine (``engine.rois``, ``engine.export``); this module
only places its ROIs in napari. Engine ROI polygons use pixel *edges* on integers (QuPath's frame: level-1
pixel ``j`` spans ``[j, j+1)``), napari puts pixel *centres* on integers, hence the half-pixel shift.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import layers

ROI_LAYER = "MuViT ROIs"
EDGE_TO_CENTRE = -0.5  # QuPath/edge frame -> world pixel-centre frame


def score_choices(store) -> list[str]:
    """Scores the store can rank by, as the engine names them (``entropy``, ``class:NAME``, ...)."""
    from .results import store_meta

    columns = list(store_meta(store).get("score_names") or [])
    return ["entropy" if c == "entropy" else c.replace("p:", "class:") for c in columns]


def roi_layer_and_table(store, pixel_size=None, origin_offset=(0.0, 0.0), score=None, top_k: int = 20):
    """``(shapes layer tuple, rows)`` with ``rows = (ranks, scores, centres_yx, sizes)`` in napari's
    world px frame, or ``(None, None)`` when the store has no ranked ROI (e.g. nothing finished yet)."""
    from napari_muvit.engine.rois import rank_rois

    if not (Path(store) / "tiles.csv").is_file():
        return None, None
    rois = rank_rois(store, score=score, top_k=top_k)
    if not rois:
        return None, None
    shift = np.asarray(origin_offset, dtype=float)
    polygons = [np.asarray(r.polygon_yx, dtype=float)[:-1] + EDGE_TO_CENTRE + shift for r in rois]
    centres = np.asarray([r.centroid_yx for r in rois], dtype=float) + shift
    sizes = [max(r.bbox[1] - r.bbox[0], r.bbox[3] - r.bbox[2]) for r in rois]
    features = {
        "rank": np.asarray([r.rank for r in rois]), "score": np.asarray([r.score for r in rois]),
        "class": np.asarray([r.classification for r in rois]),
        "centroid_y": centres[:, 0], "centroid_x": centres[:, 1],
    }
    scale, _ = layers.level_transform(1, pixel_size, 2)
    kwargs = {
        "name": ROI_LAYER, "scale": scale, "shape_type": "polygon", "features": features,
        "edge_color": "#00ff88", "face_color": "transparent", "edge_width": 2.0,
        "text": {"string": "{rank}", "color": "#00ff88", "anchor": "upper_left", "size": 10},
        "metadata": {layers.META_KEY: {"kind": "rois", "level": 1, "store": str(store), "score": score,
                                       "pixel_size": None if pixel_size is None else list(pixel_size)}},
    }
    rows = (features["rank"], features["score"], centres, sizes)
    return (polygons, kwargs, "shapes"), rows


def export_rois(store, fmt: str, path=None, score=None, top_k: int = 20) -> Path:
    """Write the store's ranked ROIs as GeoJSON (QuPath) or CSV next to it (or to ``path``)."""
    from napari_muvit.engine.export import export_rois as engine_export
    from napari_muvit.engine.rois import rank_rois

    if fmt not in ("geojson", "csv"):
        raise ValueError(f"export format {fmt!r} is not 'geojson' or 'csv'.")
    rois = rank_rois(store, score=score, top_k=top_k)
    if not rois:
        raise ValueError("this run has no finished tiles to rank yet; run (or continue) the prediction first.")
    path = Path(path) if path else Path(store) / f"rois.{fmt}"
    return engine_export(rois, path, score_name=score or "score")
