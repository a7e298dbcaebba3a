"""`OutputStore`: the OME-Zarr (v0.5, zarr v3) store a prediction run writes and every reader opens; layout
in docs/outputs.md.

```
OUT.zarr/
  zarr.json            ome.multiscales (the image: c, y, x), ome.omero (channel names/colours),
                       napari_muvit.{task, recipe, layout, origin, versions, model_hash, class_names, grid, ...}
  0/ 1/ ...            image pyramid (mean downsampling, factor 2 per level)
  labels/prediction/   argmax + 1 (0 = not predicted) pyramid (mode downsampling), ome.image-label
  tiles.csv            one row per tile: owned world box, status, scores
  .muvit/state.npz     resumable run state (done tiles + scores, written bands), replaced atomically
  .muvit/scratch/      tile predictions of a dask run waiting for their band (deleted when unneeded)
                       (the .muvit/ files: `engine/run_state.py`)
```
Segmentation stores span the whole slide in large chunks written one band at a time (`engine/stitch.py`);
classifier and feature stores cover the predicted region.
"""

from __future__ import annotations

import csv
import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import zarr

from ..data.chunk_files import ChunkFiles
from ..data.colors import class_rgb, class_rgba, omero_hex
from ..data.ome_metadata import image_label, labels_group_attributes, multiscale, ome_attributes
from .downsample import downsample_mean, downsample_mean_uint8, downsample_mode
from .run_state import (  # noqa: F401  (status codes keep their engine.store import path)
    BACKGROUND,
    DONE,
    PREDICTED,
    STATUS_NAMES,
    TODO,
    RunStateFiles,
)


def prepare_output(path: str | Path, resume: bool, overwrite: bool) -> bool:
    """Check the output without removing anything (an old store is replaced only once the new one exists,
    see ``engine/safety.py``); returns True when an existing store should be resumed."""
    from .safety import check_store_target

    return check_store_target(path, resume, overwrite)


class OutputStore(RunStateFiles):
    """A prediction store on the local (or shared) file system; see the module docstring for the layout.

    Writing: `create`, then `write_chunk` / `write_block`, `save_state`, `build_pyramid`. Reading (every other
    module reads stores through this, never through zarr paths): `OutputStore.open(path)`, then `origin_yx`,
    `factor`, `class_names`, `image_levels(decode=True)` (probabilities as float32), `label_levels()`.
    """

    def __init__(self, path: str | Path, mode: str = "r+"):
        self.path = Path(path)
        self.root = zarr.open_group(str(self.path), mode=mode)
        self.meta = dict(self.root.attrs["napari_muvit"])

    # ---- reading ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> OutputStore:
        """Open a prediction store read-only (this layout or the previous one, see docs/outputs.md)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"store {str(path)!r} does not exist; give the OUT.zarr written by predict.")
        try:
            root = zarr.open_group(str(path), mode="r")
            meta = dict(root.attrs.get("napari_muvit", {}))
        except Exception as exc:  # zarr raises several types for "not a group"
            raise ValueError(f"{str(path)!r} is not a zarr store; give the OUT.zarr written by predict.") from exc
        if not meta:
            raise ValueError(f"{str(path)!r} is not a napari-muvit prediction store; give the OUT.zarr written by predict.")
        self = cls.__new__(cls)
        self.path, self.root, self.meta = path, root, meta
        return self

    @property
    def layout(self) -> dict:
        """``{"version": 2, "extent": "slide", "level", "chunks", "prob_dtype"}``; version 1 = previous layout."""
        lay = self.meta.get("layout")
        return dict(lay) if isinstance(lay, dict) else {"version": 1, "extent": "region", "level": 1,
                                                          "prob_dtype": str((self.meta.get("image") or {}).get("dtype", "float32"))}

    @property
    def prob_dtype(self) -> str:
        return str(self.layout.get("prob_dtype", "float32"))

    @property
    def has_probabilities(self) -> bool:
        return self.prob_dtype != "none"

    @property
    def factor(self) -> float:
        """World px per level-0 pixel."""
        return float((self.meta.get("image") or {}).get("factor", 1))

    @property
    def origin_yx(self) -> tuple[float, float]:
        """World px where level-0 pixel ``(0, 0)`` starts (0 for whole-slide stores, the region corner before)."""
        if self.meta.get("origin") is not None:
            return tuple(float(v) for v in self.meta["origin"])
        y0, _, x0, _ = self.meta.get("region") or (0, 0, 0, 0)
        return (float(y0), float(x0))

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("class_names")

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    def _levels(self, group, complete) -> list:
        import dask.array as da

        n = int(self.meta.get("n_levels", 1)) if (self.complete if complete is None else complete) else 1
        return [da.from_zarr(group[str(k)]) for k in range(max(1, n)) if str(k) in group]

    def image_levels(self, decode: bool = True, complete: bool | None = None) -> list:
        """Lazy image pyramid (finest first); with ``decode`` quantised probabilities come back as float32 in
        [0, 1]. Only level 0 until the run is complete (``complete`` overrides)."""
        arrays = self._levels(self.root, complete)
        if decode and self.meta.get("task") in ("segmentation", "classification") and self.prob_dtype == "uint8":
            from .band_convert import decode_probs

            arrays = [decode_probs(a, "uint8") for a in arrays]
        return arrays

    def label_levels(self, complete: bool | None = None) -> list:
        """Lazy labels pyramid (``argmax + 1``, 0 = not predicted); empty when the store has no labels."""
        if "labels" not in self.root or "prediction" not in self.root["labels"]:
            return []
        return self._levels(self.root["labels"]["prediction"], complete)

    def label_attrs(self) -> dict:
        """The labels group's OME attributes (``image-label`` colours and properties)."""
        if "labels" not in self.root or "prediction" not in self.root["labels"]:
            return {}
        attrs = dict(self.root["labels"]["prediction"].attrs)
        return dict(attrs.get("ome", attrs))

    # ---- creation -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path, *, image: dict, region, labels: list[str] | None, label_colors=None, pixel_size=None,
               unit=None, attrs: dict, origin=None, translation=(0.0, 0.0), layout: dict | None = None) -> OutputStore:
        """``origin``: world px where level-0 pixel 0 starts (default: the region corner); ``translation``: the
        slide's own physical translation, added to every level's; ``layout``: `OutputLayout.to_dict()`."""
        path = Path(path)
        origin = tuple(origin) if origin is not None else (region[0], region[2])
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        c, h, w = image["shape"]
        root.create_array("0", shape=(c, h, w), chunks=tuple(image["chunks"]), dtype=image["dtype"], fill_value=0,
                          dimension_names=["c", "y", "x"])
        n_levels = _n_levels(h, w)
        factors = [image["factor"] * 2**k for k in range(n_levels)]
        space = dict(pixel_size=pixel_size or None, unit=unit, origin_world=origin, translation=translation)
        top = 255.0 if np.dtype(image["dtype"]) == np.uint8 else 1.0
        omero = {"channels": [
            {"label": name, "color": omero_hex(class_rgb(image.get("colors"), k)), "active": True,
             "window": {"start": 0.0, "end": top, "min": 0.0, "max": top}}
            for k, name in enumerate(image["channel_names"])
        ]}
        ome = ome_attributes(multiscale(image.get("name", "prediction"), factors, channel=True, kind="mean", **space),
                             omero=omero)
        meta = dict(attrs)
        meta.update({"image": {k: v for k, v in image.items() if k != "dtype"} | {"dtype": str(np.dtype(image["dtype"]))},
                     "region": list(region), "origin": list(origin), "n_levels": n_levels, "labels": labels,
                     "complete": False, "pixel_size": list(pixel_size) if pixel_size else None, "unit": unit,
                     "translation": [float(v) for v in translation]})
        if layout is not None:
            meta["layout"] = layout
        root.attrs.update({"ome": ome, "napari_muvit": _jsonable(meta)})
        if labels is not None:
            lab_group = root.create_group("labels")
            lab_group.attrs.update({"ome": labels_group_attributes(["prediction"])})
            pred = lab_group.create_group("prediction")
            dtype = np.uint8 if len(labels) < 255 else np.uint16
            pred.create_array("0", shape=(h, w), chunks=tuple(image["chunks"][1:]), dtype=dtype, fill_value=0,
                              dimension_names=["y", "x"])
            # label value k + 1 = class k (0 = not predicted)
            pred.attrs.update({"ome": ome_attributes(
                multiscale("prediction", factors, channel=False, kind="mode", **space),
                image_label=image_label(colors={k + 1: class_rgba(label_colors, k) for k in range(len(labels))},
                                        classes={k + 1: name for k, name in enumerate(labels)}, source="../../"))})
        (path / ".muvit" / "scratch").mkdir(parents=True, exist_ok=True)
        return cls(path)

    # ---- arrays -------------------------------------------------------------------------------
    @cached_property
    def image(self) -> zarr.Array:
        return self.root["0"]

    @cached_property
    def labels(self) -> zarr.Array | None:
        return self.root["labels/prediction/0"] if self.meta.get("labels") is not None else None

    def write_block(self, box, values: np.ndarray, label_values: np.ndarray | None = None) -> None:
        """Write level-0 ``values (C, a1-a0, b1-b0)`` at ``box = (a0, a1, b0, b1)`` (level-0 px, chunk-aligned)."""
        a0, a1, b0, b1 = box
        _write(self.image, self._image_writer, (0, a0, b0), values)
        if label_values is not None and self.labels is not None:
            _write(self.labels, self._labels_writer, (a0, b0), label_values)

    def write_chunk(self, start_yx, values: np.ndarray, label_values: np.ndarray | None = None) -> None:
        """Write whole level-0 chunk(s) ``values (C, h, w)`` (+ labels) starting at level-0 px ``start_yx``."""
        a0, b0 = start_yx
        self.write_block((a0, a0 + values.shape[1], b0, b0 + values.shape[2]), values, label_values)

    @cached_property
    def _image_writer(self) -> ChunkFiles | None:
        return ChunkFiles.for_array(self.image)

    @cached_property
    def _labels_writer(self) -> ChunkFiles | None:
        return ChunkFiles.for_array(self.labels) if self.labels is not None else None

    def set_meta(self, **items) -> None:
        self.meta.update(_jsonable(items))
        self.root.attrs["napari_muvit"] = self.meta

    # ---- finishing ----------------------------------------------------------------------------
    def write_tile_table(self, grid, state, scores, score_names) -> Path:
        """``tiles.csv``: index,row,col,y0,y1,x0,x1 (owned world box),status,<scores...> (scores of done tiles)."""
        target = self.path / "tiles.csv"
        tmp = target.with_suffix(".tmp")
        rows, cols = grid.grid_shape
        names = np.array(["todo", "todo", "done", "background"])  # "predicted" is not on disk yet
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "row", "col", "y0", "y1", "x0", "x1", "status", *score_names])
            for i in range(rows):
                st = state[i]
                for j in range(cols):
                    done = st[j] == DONE
                    vals = [f"{v:.6g}" if done and np.isfinite(v) else "" for v in scores[i, j]]
                    w.writerow([grid.tile_index(i, j), i, j, *grid.owned_world(i, j), names[int(st[j]) if st[j] < 4 else 0],
                                *vals])
        os.replace(tmp, target)
        return target

    def build_pyramid(self, box=None, workers: int = 1) -> None:
        """Levels 1.. from level 0: image by 2x2 mean (rounded for uint8), labels by 2x2 mode. ``box`` =
        level-0 ``(r0, r1, c0, c1)`` holding everything written (None = the whole image); blocks outside it
        stay unwritten. Memory is bounded by one row of chunks per worker thread (``workers``; each output
        chunk has one writer)."""
        n = int(self.meta["n_levels"])
        none = self.layout.get("prob_dtype") == "none"
        h, w = self.image.shape[-2:]
        box = tuple(box) if box is not None else (0, h, 0, w)
        for k in range(1, n):
            _downsample_level(self.root, str(k - 1), str(k), downsample_mode if none else _mean_keep_dtype, box,
                              workers)
            if self.labels is not None:
                _downsample_level(self.root["labels/prediction"], str(k - 1), str(k), downsample_mode, box, workers)
            box = (box[0] // 2, -(-box[1] // 2), box[2] // 2, -(-box[3] // 2))


def _mean_keep_dtype(a: np.ndarray) -> np.ndarray:
    """2x2 mean; quantised (uint8) values are rounded back to uint8."""
    if np.dtype(a.dtype) == np.uint8:  # = np.rint of the float mean, in integer arithmetic
        return downsample_mean_uint8(a)
    return downsample_mean(a).astype(a.dtype, copy=False)


def _write(array, writer: ChunkFiles | None, start, values) -> None:
    """Whole chunks go straight to their files (fewer CPU cycles per chunk); anything else through zarr."""
    values = np.asarray(values)
    if writer is not None and writer.covers(start, values.shape):
        writer.write(start, values)
    else:
        array[tuple(slice(s, s + n) for s, n in zip(start, values.shape))] = values


def _downsample_level(group, src_name, dst_name, fn, box, workers: int = 1):
    """``dst`` = ``fn`` (2x2) of ``src``, written one row of ``dst`` chunks at a time over ``box`` (src px)."""
    src = group[src_name]
    shape = src.shape
    new = tuple(shape[:-2]) + tuple((s + 1) // 2 for s in shape[-2:])
    ch, cw = (min(c, s) for c, s in zip(src.chunks[-2:], new[-2:]))
    chunks = tuple(shape[:-2]) + (ch, cw)
    if dst_name in group:
        del group[dst_name]
    dst = group.create_array(dst_name, shape=new, chunks=chunks, dtype=src.dtype, fill_value=0,
                             dimension_names=list(src.metadata.dimension_names or []) or None)
    src_files, dst_files = ChunkFiles.for_array(src), ChunkFiles.for_array(dst)
    lead = (0,) * (len(shape) - 2)
    r0, r1, c0, c1 = box
    d0, d1 = (r0 // 2) // ch * ch, min(new[-2], -(-r1 // 2))
    e0, e1 = (c0 // 2) // cw * cw, min(new[-1], -(-c1 // 2))
    def one(y, x):
        ys, xs = 2 * y, 2 * x
        size = tuple(shape[:-2]) + (min(2 * ch, shape[-2] - ys), min(2 * cw, shape[-1] - xs))
        if src_files is not None:  # decode the chunk files directly
            tile = src_files.read(lead + (ys, xs), size).astype(src.dtype, copy=False)
        else:
            tile = src[..., ys : ys + size[-2], xs : xs + size[-1]]
        _write(dst, dst_files, lead + (y, x), fn(tile))

    cells = [(y, x) for y in range(d0, d1, ch) for x in range(e0, e1, cw)]
    if workers > 1 and len(cells) > 1 and dst_files is not None:  # chunk files: one writer per file, any order
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(int(workers), len(cells))) as pool:
            list(pool.map(lambda c: one(*c), cells))
    else:
        for c in cells:
            one(*c)


def _n_levels(h, w, smallest=256, max_levels=10):
    n = 1
    while max(h, w) / 2 ** (n - 1) > smallest and n < max_levels:
        n += 1
    return n


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_default))


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
