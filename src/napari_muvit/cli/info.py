"""`napari-muvit info TARGET`: summarise a slide, a model folder or a prediction store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXAMPLES = """examples:
  napari-muvit info slide.ome.zarr
  napari-muvit info slide.svs --json
  napari-muvit info demo
  napari-muvit info models/kidney
  napari-muvit info pred.zarr --json
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a slide, a model folder or a prediction output store",
        description="Print what a slide holds (format, levels, shapes, factors, pixel size, channels, RGB,\n"
        "translation), what a model folder holds (task, levels, crop and patch size, classes, hash) or\n"
        "what a prediction store holds (task, region, tiles finished, recipe).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="TARGET", help="slide (OME-Zarr, OME-TIFF, SVS, ...), model folder, 'demo', or OUT.zarr")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def describe_output(path: Path) -> dict:
    import numpy as np
    import zarr

    from napari_muvit.engine.store import STATUS_NAMES

    g = zarr.open_group(str(path), mode="r")
    meta = dict(g.attrs.get("napari_muvit", {}))
    if not meta:
        raise ValueError(f"{str(path)!r} is a zarr store but not a napari-muvit prediction; give a prediction store or a model folder.")
    counts = {}
    state_file = path / ".muvit" / "state.npz"
    if state_file.exists():
        with np.load(state_file) as z:
            state = z["state"]
        counts = {STATUS_NAMES[k]: int(np.count_nonzero(state == k)) for k in STATUS_NAMES}
    levels = sorted((k for k in g.array_keys() if k.isdigit()), key=int)
    return {
        "kind": "prediction",
        "path": str(path),
        "task": meta.get("task"),
        "complete": meta.get("complete"),
        "classes": meta.get("class_names"),
        "region": meta.get("region"),
        "image_shapes": [list(g[k].shape) for k in levels],
        "tile_grid": meta.get("grid", {}).get("grid_shape"),
        "tiles": counts,
        "scores": meta.get("score_names"),
        "model_hash": meta.get("model_hash"),
        "recipe": meta.get("recipe"),
        "versions": meta.get("versions"),
    }


def _slide_format(path: Path, pyramid) -> str:
    if path.is_dir():
        meta = getattr(pyramid, "metadata", {}) or {}
        ms = (meta.get("multiscales") or [{}])[0]
        version = meta.get("version") or ms.get("version")
        return f"OME-Zarr {version}" if version else "OME-Zarr"
    lower = path.name.lower()
    if lower.endswith((".ome.tif", ".ome.tiff", ".ome.btf")):
        return "OME-TIFF"
    return path.suffix.lstrip(".").upper() or "image"


def describe_slide(path: Path) -> dict:
    """A slide as the reader sees it: format, levels, shapes, factors, pixel size, channels, RGB, translation."""
    from napari_muvit.data import open_pyramid

    pyr = open_pyramid(path)
    return {
        "kind": "slide",
        "path": str(path),
        "format": _slide_format(path, pyr),
        "dims": "z, y, x" if pyr.spatial_ndim == 3 else "y, x",
        "shape": list(pyr.shape),
        "levels": len(pyr.arrays),
        "stored_levels": int(sum(pyr.stored_levels)),
        "level_shapes": [list(pyr.level_shape(i)) for i in range(len(pyr.arrays))],
        "factors": [list(f) for f in pyr.factors],
        "dtype": str(pyr.dtype),
        "pixel_size": list(pyr.pixel_size) if pyr.pixel_size is not None else None,
        "unit": pyr.unit,
        "channels": pyr.n_channels,
        "channel_names": list(pyr.channel_names),
        "rgb": bool(pyr.rgb),
        "translation": list(pyr.spatial_translation),
    }


def _is_prediction_store(path: Path) -> bool:
    import zarr

    try:
        return bool(zarr.open_group(str(path), mode="r").attrs.get("napari_muvit"))
    except Exception:
        return False


def _is_slide(path: Path) -> bool:
    """Files are slides (a model is a folder); zarr folders are slides unless they hold a prediction."""
    if path.is_dir():
        return any((path / f).is_file() for f in ("zarr.json", ".zgroup", ".zattrs")) and not _is_prediction_store(path)
    return path.is_file()


def describe_model(target: str) -> dict:
    import numpy as np

    from napari_muvit.model import load_model, model_hash

    model = load_model(target)
    card = model.card
    enc = model.encoder
    return {
        "kind": "model",
        "path": str(target),
        "task": card.task,
        "levels": list(enc.levels),
        "crop_size": card.crop_size,
        "patch_size": int(np.atleast_1d(enc.patch_size)[0]),
        "in_channels": enc.in_channels,
        "dim": enc.dim,
        "layers": len(getattr(enc, "layers", [])),
        "classes": list(card.class_names or []),
        "normalization": card.normalization,
        "pixel_size": card.pixel_size,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "model_hash": model_hash(target),
    }


def run(args) -> int:
    target = args.target
    path = Path(target)
    if target != "demo" and not path.exists():
        raise FileNotFoundError(
            f"{target!r} does not exist; give a slide, a model folder, 'demo' or a prediction store.")
    if target != "demo" and _is_slide(path):
        info = describe_slide(path)
    elif (path / "zarr.json").is_file() or (path / ".zgroup").is_file():
        info = describe_output(path)
    else:
        info = describe_model(target)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for key, value in info.items():
        if key in ("recipe", "versions") and value:
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, {}, [], ""))
        print(f"{key:>14}: {value}")
    return 0
