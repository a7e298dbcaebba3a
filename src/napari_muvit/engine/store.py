"""`OutputStore`: the OME-Zarr (v0.5, zarr v3) store a prediction run writes; layout in docs/outputs.md.

```
OUT.zarr/
  zarr.json            ome.multiscales (the image: c, y, x), ome.omero (channel names/colours),
                       napari_muvit.{kind, task, recipe, versions, model_hash, class_names, grid, ...}
  0/ 1/ ...            image pyramid (mean downsampling, factor 2 per level)
  labels/prediction/   argmax + 1 (0 = not predicted) pyramid (mode downsampling), ome.image-label
  tiles.csv            one row per tile: owned world box, status, scores
  .muvit/state.npz     resumable run state (tile status + scores), replaced atomically
  .muvit/scratch/      per-tile predictions waiting for their neighbours (deleted when unneeded)
```
Level-0 chunks are the tiles' owned regions, so each chunk has exactly one writer.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from functools import cached_property
from pathlib import Path

import numpy as np
import zarr

from .chunk_files import ChunkFiles
from .downsample import downsample_mean, downsample_mode

# tile status codes in the state file
TODO, PREDICTED, DONE, BACKGROUND = 0, 1, 2, 3
STATUS_NAMES = {TODO: "todo", PREDICTED: "predicted", DONE: "done", BACKGROUND: "background"}

_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
]


def _rgba(names_colors, k) -> tuple[int, int, int, int]:
    """Colour ``k`` as 0-255 RGBA from '#rrggbb[aa]', 0-1 or 0-255 sequences; a palette colour if missing."""
    if names_colors and k < len(names_colors) and names_colors[k] is not None and len(names_colors[k]):
        c = names_colors[k]
        if isinstance(c, str):
            c = c.lstrip("#")
            vals = [int(c[i : i + 2], 16) for i in range(0, min(len(c), 8), 2)]
        else:
            vals = list(c)[:4]
            if max(vals) <= 1.0:
                vals = [int(round(v * 255)) for v in vals]
        vals = [int(v) for v in vals] + [255] * (4 - len(vals))
        return tuple(vals[:4])
    return (*_PALETTE[k % len(_PALETTE)], 255)


def _color(names_colors, k) -> tuple[int, int, int]:
    return _rgba(names_colors, k)[:3]


def prepare_output(path: str | Path, resume: bool, overwrite: bool) -> bool:
    """Apply the never-overwrite rule; returns True when an existing store should be resumed."""
    path = Path(path)
    if not str(path):
        raise ValueError("no output path was given; pass --out OUT.zarr.")
    if not path.exists():
        return False
    if resume:
        if not (path / "zarr.json").is_file() or not (path / ".muvit").is_dir():
            raise ValueError(f"output {str(path)!r} exists but is not a napari-muvit prediction store; it cannot be resumed.")
        return True
    if not overwrite:
        raise FileExistsError(
            f"output {str(path)!r} already exists; pass --resume to continue it or --overwrite to replace it."
        )
    looks_like_zarr = (path / "zarr.json").exists() or (path / ".zgroup").exists() or (path / ".zattrs").exists()
    if path.is_dir() and not looks_like_zarr and any(path.iterdir()):
        raise ValueError(f"output {str(path)!r} is a non-empty folder that is not a zarr store; refusing to delete it.")
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return False


class OutputStore:
    """A prediction store on the local (or shared) file system; see the module docstring for the layout.

    ``image`` : ``dict`` with ``channel_names``, ``shape`` ``(C, h, w)``, ``chunks`` ``(C, ch, cw)``,
    ``factor`` (world px per level-0 pixel), ``dtype``; ``labels`` : class names (or ``None``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.root = zarr.open_group(str(self.path), mode="r+")
        self.meta = dict(self.root.attrs["napari_muvit"])

    # ---- creation -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path, *, image: dict, region, labels: list[str] | None, label_colors=None, pixel_size=None,
               unit=None, attrs: dict) -> OutputStore:
        path = Path(path)
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        c, h, w = image["shape"]
        root.create_array("0", shape=(c, h, w), chunks=tuple(image["chunks"]), dtype=image["dtype"], fill_value=0,
                          dimension_names=["c", "y", "x"])
        n_levels = _n_levels(h, w)
        transforms = [_transforms(region, image["factor"] * 2**k, pixel_size, channel=True) for k in range(n_levels)]
        axes = _axes(unit, channel=True)
        omero = {"channels": [
            {"label": name, "color": "{:02X}{:02X}{:02X}".format(*_color(image.get("colors"), k)), "active": True,
             "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}}
            for k, name in enumerate(image["channel_names"])
        ]}
        ome = {"version": "0.5", "multiscales": [{
            "name": image.get("name", "prediction"), "axes": axes,
            "datasets": [{"path": str(k), "coordinateTransformations": t} for k, t in enumerate(transforms)],
            "type": "mean",
        }], "omero": omero}
        meta = dict(attrs)
        meta.update({"image": {k: v for k, v in image.items() if k != "dtype"} | {"dtype": str(np.dtype(image["dtype"]))},
                     "region": list(region), "n_levels": n_levels, "labels": labels, "complete": False,
                     "pixel_size": list(pixel_size) if pixel_size else None, "unit": unit})
        root.attrs.update({"ome": ome, "napari_muvit": _jsonable(meta)})
        if labels is not None:
            lab_group = root.create_group("labels")
            lab_group.attrs.update({"ome": {"version": "0.5", "labels": ["prediction"]}})
            pred = lab_group.create_group("prediction")
            dtype = np.uint8 if len(labels) < 255 else np.uint16
            pred.create_array("0", shape=(h, w), chunks=tuple(image["chunks"][1:]), dtype=dtype, fill_value=0,
                              dimension_names=["y", "x"])
            ltrans = [_transforms(region, image["factor"] * 2**k, pixel_size, channel=False) for k in range(n_levels)]
            pred.attrs.update({"ome": {"version": "0.5", "multiscales": [{
                "name": "prediction", "axes": _axes(unit, channel=False),
                "datasets": [{"path": str(k), "coordinateTransformations": t} for k, t in enumerate(ltrans)],
                "type": "mode",
            }], "image-label": {
                "version": "0.5",
                "colors": [{"label-value": k + 1, "rgba": list(_rgba(label_colors, k))} for k in range(len(labels))],
                "properties": [{"label-value": k + 1, "class": name} for k, name in enumerate(labels)],
                "source": {"image": "../../"},
            }}})
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
        """Write level-0 ``values (C, a1-a0, b1-b0)`` at region-relative ``box = (a0, a1, b0, b1)`` (a chunk)."""
        a0, a1, b0, b1 = box
        _write(self.image, self._image_writer, (0, a0, b0), values)
        if label_values is not None and self.labels is not None:
            _write(self.labels, self._labels_writer, (a0, b0), label_values)

    @cached_property
    def _image_writer(self) -> ChunkFiles | None:
        return ChunkFiles.for_array(self.image)

    @cached_property
    def _labels_writer(self) -> ChunkFiles | None:
        return ChunkFiles.for_array(self.labels) if self.labels is not None else None

    # ---- scratch ------------------------------------------------------------------------------
    def _scratch(self, i, j) -> Path:
        return self.path / ".muvit" / "scratch" / f"{i}_{j}.npy"

    def write_scratch(self, i: int, j: int, pred: np.ndarray) -> None:
        """Keep a tile's ``(K, S, S)`` prediction until its neighbours' chunks are blended (atomic)."""
        target = self._scratch(i, j)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, pred)
        os.replace(tmp, target)

    def read_scratch(self, i: int, j: int) -> np.ndarray | None:
        p = self._scratch(i, j)
        return np.load(p) if p.exists() else None

    def has_scratch(self, i: int, j: int) -> bool:
        return self._scratch(i, j).exists()

    def delete_scratch(self, i: int, j: int) -> None:
        self._scratch(i, j).unlink(missing_ok=True)

    # ---- state --------------------------------------------------------------------------------
    def load_state(self, grid_shape, n_scores) -> tuple[np.ndarray, np.ndarray]:
        p = self.path / ".muvit" / "state.npz"
        if p.exists():
            with np.load(p) as z:
                state, scores = z["state"].copy(), z["scores"].copy()
            if state.shape == tuple(grid_shape) and scores.shape[-1] == n_scores:
                return state, scores
        return np.zeros(grid_shape, np.uint8), np.full((*grid_shape, n_scores), np.nan, np.float32)

    def save_state(self, state: np.ndarray, scores: np.ndarray) -> None:
        """Persist tile status + scores atomically (a killed run never leaves a half-written state)."""
        target = self.path / ".muvit" / "state.npz"
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, state=state, scores=scores)
        os.replace(tmp, target)

    def set_meta(self, **items) -> None:
        self.meta.update(_jsonable(items))
        self.root.attrs["napari_muvit"] = self.meta

    # ---- finishing ----------------------------------------------------------------------------
    def write_tile_table(self, grid, state, scores, score_names) -> Path:
        """``tiles.csv``: index,row,col,y0,y1,x0,x1 (owned world box),status,<scores...>."""
        target = self.path / "tiles.csv"
        tmp = target.with_suffix(".tmp")
        rows, cols = grid.grid_shape
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "row", "col", "y0", "y1", "x0", "x1", "status", *score_names])
            for i in range(rows):
                for j in range(cols):
                    vals = ["" if not np.isfinite(v) else f"{v:.6g}" for v in scores[i, j]]
                    w.writerow([grid.tile_index(i, j), i, j, *grid.owned_world(i, j),
                                STATUS_NAMES[int(state[i, j])], *vals])
        os.replace(tmp, target)
        return target

    def build_pyramid(self) -> None:
        """Levels 1.. from level 0: image by 2x2 mean, labels by 2x2 mode (memory bounded by a block)."""
        n = int(self.meta["n_levels"])
        for k in range(1, n):
            _downsample_level(self.root, str(k - 1), str(k), downsample_mean, channel=True)
            if self.labels is not None:
                _downsample_level(self.root["labels/prediction"], str(k - 1), str(k), downsample_mode, channel=False)

    def clear_scratch(self) -> None:
        shutil.rmtree(self.path / ".muvit" / "scratch", ignore_errors=True)


def _write(array, writer: ChunkFiles | None, start, values) -> None:
    """Whole chunks go straight to their files (fewer CPU cycles per chunk); anything else through zarr."""
    values = np.asarray(values)
    if writer is not None and writer.covers(start, values.shape):
        writer.write(start, values)
    else:
        array[tuple(slice(s, s + n) for s, n in zip(start, values.shape))] = values


def _downsample_level(group, src_name, dst_name, fn, channel, block=512):
    src = group[src_name]
    shape = src.shape
    new = tuple(shape[:-2]) + tuple((s + 1) // 2 for s in shape[-2:])
    chunks = tuple(shape[:-2]) + tuple(min(block // 2, s) for s in new[-2:])
    if dst_name in group:
        del group[dst_name]
    dst = group.create_array(dst_name, shape=new, chunks=chunks, dtype=src.dtype, fill_value=0,
                             dimension_names=list(src.metadata.dimension_names or []) or None)
    src_files, dst_files = ChunkFiles.for_array(src), ChunkFiles.for_array(dst)
    lead = (0,) * (len(shape) - 2)
    for y in range(0, shape[-2], block):
        for x in range(0, shape[-1], block):
            if src_files is not None:  # decode the chunk files directly: level 0 has thousands of small chunks
                size = tuple(shape[:-2]) + (min(block, shape[-2] - y), min(block, shape[-1] - x))
                tile = src_files.read(lead + (y, x), size).astype(src.dtype, copy=False)
            else:
                tile = src[..., y : y + block, x : x + block]
            _write(dst, dst_files, lead + (y // 2, x // 2), fn(tile))


def _n_levels(h, w, smallest=256, max_levels=8):
    n = 1
    while max(h, w) / 2 ** (n - 1) > smallest and n < max_levels:
        n += 1
    return n


def _axes(unit, channel):
    space = {"type": "space"} | ({"unit": unit} if unit else {})
    axes = [{"name": "y"} | space, {"name": "x"} | space]
    return ([{"name": "c", "type": "channel"}] if channel else []) + axes


def _transforms(region, f, pixel_size, channel):
    """Pixel ``k`` of a level with ``f`` world px per pixel covers ``[y0 + k f, y0 + (k+1) f)``: centre offset ``(f-1)/2``."""
    y0, _, x0, _ = region
    py, px = (pixel_size or (1.0, 1.0))[-2:]
    scale = [f * py, f * px]
    trans = [(y0 + (f - 1) / 2) * py, (x0 + (f - 1) / 2) * px]
    if channel:
        scale, trans = [1.0, *scale], [0.0, *trans]
    return [{"type": "scale", "scale": [float(v) for v in scale]},
            {"type": "translation", "translation": [float(v) for v in trans]}]


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
