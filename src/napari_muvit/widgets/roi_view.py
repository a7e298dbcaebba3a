"""Ranked ROIs of a prediction store -> a Shapes layer with a features table, ROI list rows, exports.

Ranking and the export formats belong to the engine (``engine.rois``, ``engine.export``); this module
only places its ROIs in napari. Engine ROI polygons use pixel *edges* on integers (QuPath's frame: level-1
pixel ``j`` spans ``[j, j+1)``), napari puts pixel *centres* on integers, hence the half-pixel shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import layers

ROI_LAYER = "MuViT ROIs"


SCORE_HELP = {
    "foreground": "the most probable class that is not background (the default: background never comes first)",
    "entropy": "uncertainty: high where the model hesitates between classes",
    "mae_error": "reconstruction error: high where the tissue looks unusual",
}


def score_choices(store) -> list[str]:
    """Scores the store can rank by, as the engine (and the CLI) names them, the default first."""
    from napari_muvit.engine.rois import score_names

    from .results import store_meta

    return score_names(store_meta(store))


def score_help(score: str) -> str:
    """One line explaining a score in plain words (for the rank-by tooltip)."""
    if score.startswith("class:"):
        return f"mean probability of {score[6:]!r} over each tile"
    return SCORE_HELP.get(score, f"the tile table's {score!r} column")


@dataclass
class RankedRois:
    """The ROIs a list shows, in its order: ``rois`` (engine `Roi`, best first) are what export writes;
    ``centres_yx`` / ``sizes`` are in napari's world px frame (the image offset included)."""

    score: str
    rois: list = field(default_factory=list)
    centres_yx: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    sizes: list = field(default_factory=list)

    @property
    def rows(self) -> tuple:
        """``(ranks, scores, centres_yx, sizes)`` for `RoiTable.set_rois`."""
        return ([r.rank for r in self.rois], [r.score for r in self.rois], self.centres_yx, self.sizes)


def roi_layer_and_table(store, pixel_size=None, origin_offset=(0.0, 0.0), score=None, top_k: int = 20):
    """``(shapes layer tuple, RankedRois)`` in napari's world px frame, or ``(None, None)`` when the store
    has no ranked ROI (e.g. nothing finished yet). ``score`` None = the store's default score."""
    from napari_muvit.engine.rois import rank_rois, store_default_score

    if not (Path(store) / "tiles.csv").is_file():
        return None, None
    score = score or store_default_score(store)
    rois = rank_rois(store, score=score, top_k=top_k)
    if not rois:
        return None, None
    shift = np.asarray(origin_offset, dtype=float)
    from napari_muvit.data.geometry import edge_to_centre_frame

    # ROI polygons are in the QuPath/edge frame; layers are in the world pixel-centre frame
    polygons = [edge_to_centre_frame(np.asarray(r.polygon_yx, dtype=float)[:-1]) + shift for r in rois]
    centres = np.asarray([r.centroid_yx for r in rois], dtype=float) + shift
    sizes = [max(r.bbox[1] - r.bbox[0], r.bbox[3] - r.bbox[2]) for r in rois]
    features = {
        "rank": np.asarray([r.rank for r in rois]), "score": np.asarray([r.score for r in rois]),
        "class": np.asarray([r.classification for r in rois]),
        "centroid_y": centres[:, 0], "centroid_x": centres[:, 1],
    }
    layer = layers.roi_polygons_layer(polygons, features, pixel_size, name=ROI_LAYER,
                                      extra_meta={"store": str(store), "score": score})
    return layer, RankedRois(score, list(rois), centres, sizes)


def export_rois(ranked: RankedRois, fmt: str, path, store=None) -> Path:
    """Write exactly the listed ROIs (same ROIs, same order) as GeoJSON (QuPath) or CSV to ``path``;
    ``store``: the prediction store whose class colours GeoJSON uses."""
    from napari_muvit.engine.export import export_rois as engine_export

    if fmt not in ("geojson", "csv"):
        raise ValueError(f"export format {fmt!r} is not 'geojson' or 'csv'.")
    if ranked is None or not ranked.rois:
        raise ValueError("this run has no finished tiles to rank yet; run (or continue) the prediction first.")
    return engine_export(ranked.rois, Path(path), score_name=ranked.score, class_colors=store)
