"""`napari-muvit info MODEL_OR_OUTPUT`: summarise a model folder or a prediction store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXAMPLES = """examples:
  napari-muvit info demo
  napari-muvit info models/kidney
  napari-muvit info pred.zarr --json
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a model folder or a prediction output store",
        description="Print what a model folder holds (task, levels, crop and patch size, classes, hash) or\n"
        "what a prediction store holds (task, region, tiles finished, recipe).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="MODEL_OR_OUTPUT", help="model folder, 'demo', or OUT.zarr")
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
        raise FileNotFoundError(f"{target!r} does not exist; give a model folder, 'demo' or a prediction store.")
    if (path / "zarr.json").is_file() or (path / ".zgroup").is_file():
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
