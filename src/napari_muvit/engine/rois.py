"""Rank regions of interest in a prediction store by a score, with non-maximum suppression by distance.

Scores (``score=``): ``foreground`` (the highest tile probability of any class but the background: the
default for class outputs, so a default ranking never puts plain background on top), ``entropy``
(predictive uncertainty), ``class:NAME`` / ``NAME`` (probability of a class: segmentation mean over the
tile, or the classifier's score), ``mae_error`` (MAE reconstruction error: a label-free "unusual tissue"
score, the default for MAE stores), or any other column of ``tiles.csv``.

``mode="tiles"`` ranks tiles (the owned square of each tile); ``mode="regions"`` (segmentation,
``class:NAME`` only) ranks connected regions of that class in the label image at a coarse pyramid level,
scored by their mean class probability, with their outline as polygon.
All coordinates are world (level-1) pixels.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.geometry import pixel_centre, pixel_range_centre


@dataclass
class Roi:
    rank: int
    score: float
    centroid_yx: tuple[float, float]
    bbox: tuple[float, float, float, float]  # y0, y1, x0, x1 world px (half-open)
    classification: str
    polygon_yx: list = field(default_factory=list)  # closed ring of (y, x) world px
    area: float = 0.0  # world px^2
    tile_index: int | None = None


def _meta(store):
    import zarr

    root = zarr.open_group(str(store), mode="r")
    meta = dict(root.attrs.get("napari_muvit", {}))
    if not meta:
        raise ValueError(f"{str(store)!r} is not a napari-muvit prediction store; give the OUT.zarr written by predict.")
    return root, meta


FOREGROUND = "foreground"  # derived score: max over the non-background class columns of a tile
BACKGROUND_NAMES = ("background", "bg")


def is_background(name) -> bool:
    """Whether a class name means "no object here" (shown see-through, never a default ROI)."""
    return str(name).strip().lower() in BACKGROUND_NAMES


def foreground_columns(meta: dict) -> list[str]:
    """The ``p:NAME`` tile-table columns of every class but the background (all classes when none is)."""
    columns = list(meta.get("score_names") or [])
    pcols = [f"p:{c}" for c in meta.get("class_names") or [] if f"p:{c}" in columns]
    kept = [c for c in pcols if not is_background(c[2:])]
    return kept or pcols


def score_names(meta: dict) -> list[str]:
    """The scores a store can be ranked by, as users type them, its default first."""
    columns = list(meta.get("score_names") or [])
    names = ["entropy" if c == "entropy" else c.replace("p:", "class:") for c in columns]
    if foreground_columns(meta):
        names.insert(0, FOREGROUND)
    default = default_score(meta)
    if default in names:
        names.remove(default)
        names.insert(0, default)
    return names


def default_score(meta: dict) -> str | None:
    """``foreground`` for class outputs, ``mae_error`` for MAE stores, else ``entropy`` if stored, else None."""
    columns = list(meta.get("score_names") or [])
    if "mae_error" in columns:
        return "mae_error"
    if foreground_columns(meta):
        return FOREGROUND
    return "entropy" if "entropy" in columns else None


def store_default_score(store) -> str | None:
    """`default_score` of the store at ``store``."""
    return default_score(_meta(store)[1])


def read_tile_table(store) -> tuple[list[str], list[dict]]:
    path = Path(store) / "tiles.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing; the prediction store has no tile table yet.")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return (list(rows[0].keys()) if rows else []), rows


def score_column(score: str | None, meta: dict) -> str:
    """Map a user's score name to a tile-table column, or raise naming the accepted ones."""
    columns = list(meta.get("score_names") or [])
    classes = list(meta.get("class_names") or [])
    if score is None:
        score = default_score(meta)
        if score is None:
            raise ValueError(f"this store has no default score; choose one of {', '.join(columns)}.")
    s = str(score)
    if s == FOREGROUND and foreground_columns(meta):
        return FOREGROUND
    if s.startswith("class:"):
        s = "p:" + s[6:]
    elif s in classes:
        s = "p:" + s
    elif s == "mae":
        s = "mae_error"
    if s not in columns:
        raise ValueError(f"score {score!r} is not in this store; use one of {', '.join(score_names(meta))}.")
    return s


def nms_by_distance(centres: np.ndarray, scores: np.ndarray, min_distance: float, top_k: int) -> list[int]:
    """Indices of the best-scoring points, each at least ``min_distance`` from every better one kept."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        if not np.isfinite(scores[i]):
            continue
        if kept and np.min(np.hypot(*(centres[kept] - centres[i]).T)) < min_distance:
            continue
        kept.append(int(i))
        if len(kept) >= top_k:
            break
    return kept


def rank_rois(store, score: str | None = None, top_k: int = 20, min_distance: float | None = None,
              mode: str = "tiles") -> list[Roi]:
    """Top-``top_k`` ROIs of ``store`` by ``score`` (highest first), suppressed within ``min_distance`` world px.

    ``min_distance`` defaults to twice the tile stride (tiles) or 0 (regions).
    """
    if top_k < 1:
        raise ValueError(f"top-k {top_k} must be at least 1.")
    if mode not in ("tiles", "regions"):
        raise ValueError(f"ROI mode {mode!r} is not 'tiles' or 'regions'.")
    root, meta = _meta(store)
    column = score_column(score, meta)
    if mode == "regions":
        return _rank_regions(root, meta, column, top_k, min_distance or 0.0, store)
    _, rows = read_tile_table(store)
    needed = foreground_columns(meta) if column == FOREGROUND else [column]
    rows = [r for r in rows if r["status"] == "done" and all(r.get(c, "") != "" for c in needed)]
    if not rows:
        return []
    stride = float(meta.get("grid", {}).get("stride", 1))
    min_distance = 2 * stride if min_distance is None else float(min_distance)
    boxes = np.array([[float(r[k]) for k in ("y0", "y1", "x0", "x1")] for r in rows])
    centres = pixel_range_centre(boxes[:, 0::2], boxes[:, 1::2])  # (n, 2) world centre of each owned box
    classes = list(meta.get("class_names") or [])
    pcols = [f"p:{c}" for c in classes]
    if column == FOREGROUND:
        table = np.array([[float(r[c]) for c in needed] for r in rows]).reshape(len(rows), len(needed))
        scores, best = table.max(axis=1), table.argmax(axis=1)
    else:
        scores = np.array([float(r[column]) for r in rows])
    out = []
    for rank, i in enumerate(nms_by_distance(centres, scores, min_distance, top_k), start=1):
        r = rows[i]
        if column == FOREGROUND:
            label = needed[int(best[i])][2:]
        elif column.startswith("p:"):
            label = column[2:]
        elif pcols and all(c in r for c in pcols):
            label = classes[int(np.argmax([float(r[c]) for c in pcols]))]
        else:
            label = column
        y0, y1, x0, x1 = boxes[i]
        ring = [(y0, x0), (y0, x1), (y1, x1), (y1, x0), (y0, x0)]
        out.append(Roi(rank, float(scores[i]), tuple(centres[i]), (y0, y1, x0, x1), label, ring,
                       float((y1 - y0) * (x1 - x0)), int(r["index"])))
    return out


def _coarse_level(root, group, max_side=2048) -> int:
    keys = sorted((k for k in group.array_keys() if k.isdigit()), key=int)
    for k in keys:
        if max(group[k].shape[-2:]) <= max_side:
            return int(k)
    return int(keys[-1])


def _rank_regions(root, meta, column, top_k, min_distance, path) -> list[Roi]:
    from skimage import measure

    if not column.startswith("p:") or meta.get("task") != "segmentation":
        example = next((c.replace("p:", "class:") for c in foreground_columns(meta)), "class:tumour")
        raise ValueError(f"region ROIs need a segmentation store and a class score such as {example}.")
    classes = list(meta["class_names"])
    k = classes.index(column[2:])
    labels_group = root["labels/prediction"]
    lev = _coarse_level(root, labels_group)
    lab = np.asarray(labels_group[str(lev)][:])
    from .store import OutputStore

    store = OutputStore.open(path)
    prob = np.asarray(store.image_levels(complete=True)[lev][k])  # float probabilities, whatever the dtype
    f = store.factor * 2**lev
    y0w, x0w = store.origin_yx
    comp = measure.label(lab == k + 1, connectivity=2)
    props = measure.regionprops(comp, intensity_image=prob)
    if not props:
        return []
    scores = np.array([p.intensity_mean for p in props])
    centres = pixel_centre(np.array([p.centroid for p in props], dtype=np.float64), f, (y0w, x0w))
    out = []
    for rank, i in enumerate(nms_by_distance(centres, scores, min_distance, top_k), start=1):
        p = props[i]
        minr, minc, maxr, maxc = p.bbox
        mask = np.pad(comp[minr:maxr, minc:maxc] == p.label, 1)
        contour = max(measure.find_contours(mask.astype(np.float32), 0.5), key=len)
        contour = measure.approximate_polygon(contour, tolerance=0.5)
        # contour in padded pixel-index space -> world px (pixel k of this level spans [k f, (k+1) f))
        ring = [(y0w + (cy - 1 + minr + 0.5) * f, x0w + (cx - 1 + minc + 0.5) * f) for cy, cx in contour]
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        bbox = (y0w + minr * f, y0w + maxr * f, x0w + minc * f, x0w + maxc * f)
        out.append(Roi(rank, float(scores[i]), tuple(centres[i]), bbox, column[2:], ring, float(p.area * f * f)))
    return out
