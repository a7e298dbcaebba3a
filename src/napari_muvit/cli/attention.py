"""`napari-muvit attention SOURCE --model M --point y,x --out DIR`: cross-scale attention of one token."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXAMPLES = """examples:
  napari-muvit attention slide.zarr --model demo --point 5200,8100 --out attn/
  napari-muvit attention slide.zarr --model demo --point 5200,8100 --layer rollout --head 2 \\
      --query-level 4 --out attn/

writes DIR/attention.json (levels, world bboxes, level shares, query point) and per level
DIR/level_<f>.tif (float32 attention map; each pixel covers f * patch world pixels) plus DIR/attention.npz.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "attention",
        help="attention of the token at a point to every level (maps + shares)",
        description="Run the encoder on the tile containing a point and write where the token at that point\n"
        "attends, one map per level in world coordinates, plus the share of attention per level.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="slide: OME-Zarr, (OME-)TIFF, SVS/NDPI, ...")
    p.add_argument("--model", default="demo", help="model folder or 'demo' (default: demo)")
    p.add_argument("--point", required=True, help="query point y,x in full-resolution pixels")
    p.add_argument("--levels", help="levels, e.g. 1,8,32 (default: the model's)")
    p.add_argument("--tile", type=int, help="crop size in pixels (default: the model's)")
    p.add_argument("--layer", default="last", help="'last' (default), 'rollout' or a layer index")
    p.add_argument("--head", default="mean", help="'mean' (default) or a head index")
    p.add_argument("--query-level", dest="query_level", type=int, default=1,
                   help="level whose token at the point is the query (default 1)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; files are replaced)")


def parse_point(text: str) -> tuple[float, float]:
    try:
        y, x = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"point {text!r} must be two numbers y,x in full-resolution pixels, e.g. 5200,8100.") from None
    return y, x


def _index(value: str):
    return int(value) if value.lstrip("-").isdigit() else value


def run(args) -> int:
    import numpy as np
    import tifffile

    from napari_muvit.engine import safety
    from napari_muvit.engine.attention import attention_probe, open_session

    if not Path(args.source).exists():
        raise FileNotFoundError(f"source {args.source!r} does not exist; give the path of an existing slide.")
    safety.check_output_path(args.out, [args.source, args.model], what="output folder")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"output folder {args.out!r} is a file; give a folder name.")
    point = parse_point(args.point)
    session = open_session(args.source, args.model, args.levels, tile=args.tile, device=args.device)
    result = attention_probe(session, point, layer=_index(args.layer), head=_index(args.head),
                             query_level=args.query_level)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for level, (m, bbox) in zip(result.levels, result.maps):
        with safety.atomic_file(out / f"level_{level}.tif") as tmp:
            tifffile.imwrite(tmp, m.astype(np.float32))
        arrays[f"map_{level}"] = m
        arrays[f"bbox_{level}"] = bbox
    with safety.atomic_file(out / "attention.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays, level_share=result.level_share)
    summary = {
        "point_yx": list(point), "query_world_yx": list(result.query_world_yx), "query_level": args.query_level,
        "layer": args.layer, "head": args.head, "levels": list(result.levels), "patch_size": session.patch_size,
        "level_share": [float(v) for v in result.level_share],
        "maps": [{"level": lv, "file": f"level_{lv}.tif", "shape": list(m.shape), "bbox_world": bbox.tolist(),
                  "cell_world_px": lv * session.patch_size} for lv, (m, bbox) in zip(result.levels, result.maps)],
        "tile": {k: (list(v) if isinstance(v, tuple) else v) for k, v in result.tile.items()},
        "model": str(args.model), "source": str(args.source),
    }
    safety.atomic_write_text(out / "attention.json", json.dumps(summary, indent=2))
    shares = ", ".join(f"level {lv}: {s:.1%}" for lv, s in zip(result.levels, result.level_share))
    print(safety.terminal_text(f"wrote {out}: attention of the token at {point} ({shares})"))
    return 0
