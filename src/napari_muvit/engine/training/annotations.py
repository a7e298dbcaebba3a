"""User annotations for fine-tuning: label images (dense or sparse) and ROI tables (GeoJSON / CSV).

Label images are level-1 (full resolution) integer arrays of the slide's spatial shape, ``0`` = unlabelled
(ignored), ``k >= 1`` = class ``k-1``. They stay lazy (dask); only coarse summaries and crops are computed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np

from napari_muvit.data.geometry import crop_start_index

IGNORE = -1  # class index of unlabelled pixels in training targets


def open_label_image(labels, shape: tuple[int, int]) -> da.Array:
    """Lazy ``(Y, X)`` integer label image from an array, a napari Labels layer's data or a file.

    ``labels``: numpy/dask array, a list of arrays (multiscale Labels data: the full-resolution one is
    used), or a path to ``.npy``, ``.tif``/``.tiff``, a zarr array or an OME-Zarr image/labels group.
    ``shape``: the slide's level-1 ``(Y, X)``; any other shape is a user error.
    """
    if isinstance(labels, (str, Path)):
        labels = read_label_file(Path(labels))
    if isinstance(labels, (list, tuple)):
        labels = labels[0]  # napari multiscale Labels: level 0 is full resolution
    arr = labels if isinstance(labels, da.Array) else da.from_array(labels, chunks=(2048,) * np.ndim(labels))
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if tuple(arr.shape) != tuple(int(s) for s in shape):
        raise ValueError(
            f"The labels have shape {tuple(arr.shape)} but the slide's full-resolution shape is "
            f"{tuple(int(s) for s in shape)}; paint or export the labels at full resolution."
        )
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"The labels must be whole numbers (0 = unlabelled), got dtype {arr.dtype}.")
    return arr


def read_label_file(path: Path):
    """An image from ``.npy`` (memory-mapped), ``.tif``/``.tiff`` (lazy) or a zarr array / OME-Zarr group."""
    if not path.exists():
        raise FileNotFoundError(f"Label file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:  # object arrays (pickles) cannot be memory-mapped and are never loaded
            if "object" in str(exc).lower() or "pickle" in str(exc).lower():
                raise ValueError(f"label file {str(path)!r} holds Python objects (a pickle), not a label image; "
                                 "save the labels as whole numbers (e.g. numpy uint8/uint16).") from exc
            raise ValueError(f"label file {str(path)!r} is truncated or not a .npy array ({exc}).") from exc
        except (OSError, EOFError) as exc:
            raise ValueError(f"label file {str(path)!r} is truncated or not a .npy array ({exc}).") from exc
    if suffix in (".tif", ".tiff"):
        import tifffile
        import zarr

        store = tifffile.imread(path, aszarr=True)
        node = zarr.open(store, mode="r")
        return da.from_zarr(node if hasattr(node, "shape") else node["0"])
    if path.is_dir():
        import zarr

        node = zarr.open(str(path), mode="r")
        while not hasattr(node, "shape"):  # descend an OME-Zarr group: labels/<name>/<finest>, else <finest>
            groups, arrays = sorted(node.group_keys()), sorted(node.array_keys())
            finest = _finest_dataset(node.attrs.asdict())
            if "labels" in groups:
                node = node["labels"]
            elif finest in arrays:
                node = node[finest]
            elif "0" in arrays:
                node = node["0"]
            elif groups:
                names = node.attrs.asdict().get("ome", node.attrs.asdict()).get("labels") or groups
                node = node[names[0] if names[0] in groups else groups[0]]
            else:
                raise ValueError(f"{path} holds no label array; give a zarr array or an OME-Zarr labels group.")
        return da.from_zarr(node)
    raise ValueError(f"Cannot read labels from {path}; use a .npy, .tif/.tiff or .zarr file.")


def _finest_dataset(attrs: dict) -> str | None:
    """Path of the first (finest) dataset of OME-Zarr multiscales metadata (v0.4 or v0.5), if any."""
    multiscales = attrs.get("ome", attrs).get("multiscales") or []
    try:
        return str(multiscales[0]["datasets"][0]["path"])
    except (IndexError, KeyError, TypeError):
        return None


@dataclass
class LabelSummary:
    """Coarse summary of a label image: per-class pixel counts in cells of ``cell`` world px.

    ``counts (K+1, gy, gx)``: counts of label value ``v`` (0 = unlabelled) per cell; ``values``: total per
    label value.
    """

    counts: np.ndarray
    cell: int

    @property
    def labelled(self) -> np.ndarray:
        return self.counts[1:].sum(0) > 0

    @property
    def totals(self) -> np.ndarray:
        return self.counts.reshape(len(self.counts), -1).sum(1)


def summarise_labels(labels: da.Array, cell: int, num_values: int) -> LabelSummary:
    """Per-cell counts of label values ``0..num_values-1`` (values above are counted in a check first)."""
    lab = labels
    pad_y = (-lab.shape[0]) % cell
    pad_x = (-lab.shape[1]) % cell
    if pad_y or pad_x:
        lab = da.pad(lab, ((0, pad_y), (0, pad_x)), constant_values=0)
    gy, gx = lab.shape[0] // cell, lab.shape[1] // cell
    lab = lab.rechunk((max(cell, (2048 // cell) * cell),) * 2)

    def block_counts(block):
        by, bx = block.shape[0] // cell, block.shape[1] // cell
        b = np.clip(block.astype(np.int64), 0, num_values)  # value num_values = "too large"
        cells = b.reshape(by, cell, bx, cell).transpose(0, 2, 1, 3).reshape(by, bx, cell * cell)
        out = np.zeros((num_values + 1, by, bx), dtype=np.int64)
        for v in range(num_values + 1):
            out[v] = (cells == v).sum(-1)
        return out

    counts = lab.map_blocks(
        block_counts, dtype=np.int64, new_axis=0,
        chunks=((num_values + 1,),) + tuple(tuple(c // cell for c in ch) for ch in lab.chunks),
    ).compute()
    assert counts.shape[1:] == (gy, gx)
    return LabelSummary(counts=counts, cell=cell)


def check_classes(labels: da.Array, class_names: list[str] | None, cell: int) -> tuple[LabelSummary, list[str]]:
    """Validate a label image against the class list; return its summary and the class names.

    Errors (one sentence each): no labelled pixel, a label value beyond the classes, a class never seen.
    Without ``class_names`` the classes are the label values ``1..max``.
    """
    max_value = int(labels.max().compute())
    if max_value <= 0:
        raise ValueError("The labels contain no labelled pixels (all 0 = unlabelled); paint at least two classes.")
    if class_names is None:
        class_names = [f"class {v}" for v in range(1, max_value + 1)]
    k = len(class_names)
    if max_value > k:
        raise ValueError(
            f"The labels contain value {max_value} but only {k} class{'es' if k != 1 else ''} "
            f"({', '.join(class_names)}) exist{'s' if k == 1 else ''}; "
            f"use label values 1..{k} (0 = unlabelled)."
        )
    summary = summarise_labels(labels, cell, k + 1)
    totals = summary.totals[: k + 1]
    if int(labels.min().compute()) < 0:
        raise ValueError("The labels contain negative values; use 0 for unlabelled and 1..K for classes.")
    missing = [f"{v} ({class_names[v - 1]})" for v in range(1, k + 1) if totals[v] == 0]
    if missing:
        raise ValueError(
            f"Class {', '.join(missing)} never occurs in the labels; label at least a few pixels of every "
            f"class or remove it from the class list."
        )
    return summary, list(class_names)


def region_split(summary: LabelSummary, block_cells: int, val_fraction: float, seed: int):
    """Split the labelled area into training and validation *regions* (blocks of cells, not crops).

    Blocks of ``block_cells x block_cells`` cells are assigned to validation until about ``val_fraction``
    of the labelled pixels are in it; among 32 random assignments the one that keeps the most classes
    present on both sides wins. Returns boolean cell masks ``(train, val)`` of shape ``(gy, gx)``.
    """
    labelled = summary.labelled
    gy, gx = labelled.shape
    by, bx = -(-gy // block_cells), -(-gx // block_cells)
    block_id = (np.arange(gy)[:, None] // block_cells) * bx + (np.arange(gx)[None, :] // block_cells)
    per_class = summary.counts[1:]  # (K, gy, gx)
    block_class = np.zeros((by * bx, per_class.shape[0]))
    for k in range(per_class.shape[0]):
        block_class[:, k] = np.bincount(block_id.ravel(), per_class[k].ravel(), minlength=by * bx)
    used = np.flatnonzero(block_class.sum(1) > 0)
    if val_fraction <= 0 or len(used) < 2:
        return labelled.copy(), np.zeros_like(labelled)
    rng = np.random.default_rng(seed)
    total = block_class.sum()
    best, best_score = None, None
    for _ in range(32):
        order = rng.permutation(used)
        take, acc = [], 0.0
        for b in order[:-1]:  # never all blocks
            if acc >= val_fraction * total:
                break
            take.append(b)
            acc += block_class[b].sum()
        val_blocks = np.zeros(by * bx, bool)
        val_blocks[take] = True
        both = ((block_class[val_blocks].sum(0) > 0) & (block_class[~val_blocks].sum(0) > 0)).sum()
        score = (both, -abs(acc / total - val_fraction))
        if best_score is None or score > best_score:
            best, best_score = val_blocks, score
    val = best[block_id] & labelled
    return labelled & ~val, val


def read_label_crop(labels: da.Array, center_yx, size: int) -> np.ndarray:
    """``(size, size)`` int64 label crop at level 1 centred on world ``center_yx``, 0 outside the slide."""
    start = crop_start_index(np.asarray(center_yx, dtype=np.float64), 1, size)
    out = np.zeros((size, size), dtype=np.int64)
    y0, x0 = int(start[0]), int(start[1])
    sy0, sx0 = max(0, y0), max(0, x0)
    sy1, sx1 = min(labels.shape[0], y0 + size), min(labels.shape[1], x0 + size)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = np.asarray(labels[sy0:sy1, sx0:sx1])
    return out


def cell_mask_crop(mask: np.ndarray, cell: int, center_yx, size: int) -> np.ndarray:
    """``(size, size)`` bool: the cell mask (``cell`` world px per cell) sampled on a level-1 crop."""
    start = crop_start_index(np.asarray(center_yx, dtype=np.float64), 1, size)
    ys = (start[0] + np.arange(size)) // cell
    xs = (start[1] + np.arange(size)) // cell
    inside_y = (ys >= 0) & (ys < mask.shape[0])
    inside_x = (xs >= 0) & (xs < mask.shape[1])
    out = mask[np.clip(ys, 0, mask.shape[0] - 1)][:, np.clip(xs, 0, mask.shape[1] - 1)]
    return out & inside_y[:, None] & inside_x[None, :]


# ---- ROI annotations for tile classification --------------------------------------------------------


@dataclass
class ROI:
    """A region of interest: polygon ``(n, 2)`` world (y, x) px and its class name."""

    polygon: np.ndarray
    label: str

    def bounds(self) -> tuple[float, float, float, float]:
        (y0, x0), (y1, x1) = self.polygon.min(0), self.polygon.max(0)
        return float(y0), float(x0), float(y1), float(x1)

    def contains(self, points: np.ndarray) -> np.ndarray:
        from matplotlib.path import Path as MplPath

        return MplPath(self.polygon).contains_points(points)

    def sample_points(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, 2)`` uniform world points inside the polygon (rejection sampling in its bounds)."""
        y0, x0, y1, x1 = self.bounds()
        out = []
        for _ in range(100):
            pts = np.column_stack([rng.uniform(y0, y1, 4 * n + 8), rng.uniform(x0, x1, 4 * n + 8)])
            out.extend(pts[self.contains(pts)])
            if len(out) >= n:
                return np.asarray(out[:n])
        return np.tile(self.polygon.mean(0), (n, 1))  # degenerate polygon: its centroid


def read_rois(path) -> list[ROI]:
    """ROIs from GeoJSON (Polygon / MultiPolygon / Point features, x-y order, world px) or CSV.

    GeoJSON class: ``properties.classification.name`` (QuPath), else ``class``, ``label`` or ``name``.
    CSV columns: ``y_min,x_min,y_max,x_max,class`` (boxes) or ``y,x,class`` (points, a 1 px box each).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ROI file {path} does not exist.")
    if path.suffix.lower() in (".geojson", ".json"):
        rois = _rois_from_geojson(json.loads(path.read_text()))
    elif path.suffix.lower() == ".csv":
        rois = _rois_from_csv(path)
    else:
        raise ValueError(f"Cannot read ROIs from {path.name}; use a .geojson or .csv file.")
    if not rois:
        raise ValueError(f"{path.name} contains no labelled ROI; every ROI needs a class name.")
    return rois


def _class_of(props: dict) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict) and cls.get("name"):
        return str(cls["name"])
    for key in ("class", "label", "name", "classification"):
        if props.get(key) not in (None, ""):
            return str(props[key])
    return None


def _rois_from_geojson(doc: dict) -> list[ROI]:
    feats = doc.get("features", [doc] if doc.get("type") == "Feature" else [])
    rois = []
    for f in feats:
        label = _class_of(f.get("properties") or {})
        geom = f.get("geometry") or {}
        if label is None:
            continue
        kind, coords = geom.get("type"), geom.get("coordinates")
        rings = []
        if kind == "Polygon":
            rings = [coords[0]]
        elif kind == "MultiPolygon":
            rings = [p[0] for p in coords]
        elif kind == "Point":
            rings = [[coords, coords]]
        for ring in rings:
            xy = np.asarray(ring, dtype=float)[:, :2]
            rois.append(ROI(polygon=xy[:, ::-1].copy(), label=label))  # GeoJSON is (x, y)
    return rois


def _rois_from_csv(path: Path) -> list[ROI]:
    rois = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            row = {k.strip().lower(): v for k, v in row.items() if k}
            label = row.get("class") or row.get("label") or row.get("name")
            if not label:
                continue
            if {"y_min", "x_min", "y_max", "x_max"} <= row.keys():
                y0, x0, y1, x1 = (float(row[k]) for k in ("y_min", "x_min", "y_max", "x_max"))
            elif {"y", "x"} <= row.keys():
                y0 = y1 = float(row["y"])
                x0 = x1 = float(row["x"])
            else:
                raise ValueError(
                    f"{path.name} needs columns y_min,x_min,y_max,x_max,class or y,x,class; got {list(row)}."
                )
            rois.append(ROI(polygon=np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]]), label=label))
    return rois
