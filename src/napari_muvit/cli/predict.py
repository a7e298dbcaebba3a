"""`napari-muvit predict SOURCE --model M --out OUT.zarr`: tiled, stitched prediction of a slide region."""

from __future__ import annotations

import argparse
import sys

from . import _batch
from ._recipe_fields import FIELDS

EXAMPLES = """examples:
  napari-muvit predict slide.zarr --model demo --out pred.zarr
  napari-muvit predict slide.svs --model models/kidney --levels 1,8 --region 0:8192,4096:12288 \\
      --tile 256 --overlap 32 --foreground --out kidney.zarr
  napari-muvit predict slide.zarr --model demo --out pred.zarr --resume      # finish a stopped run
  napari-muvit predict slide.zarr --model demo --out small.zarr --output-level 4 --prob-dtype none
  napari-muvit predict slide.zarr --model demo --out pred.zarr --workers 2   # local dask cluster
  napari-muvit predict slide.zarr --model demo --out /shared/pred.zarr --scheduler tcp://head:8786
  napari-muvit predict --recipe run.yaml                                     # a saved recipe
  napari-muvit predict slides/ --model demo --out-dir preds/                  # every slide of a folder
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict a region or a whole slide into an OME-Zarr store",
        description="Run a MuViT model over a slide region in overlapping tiles, blend the tiles without seams\n"
        "and write class probabilities, labels and per-tile scores to a resumable OME-Zarr store.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", nargs="*", metavar="SOURCE", help="slide: OME-Zarr, (OME-)TIFF, SVS/NDPI, ...; "
                   "with --out-dir several slides, a folder of slides or a .txt list of paths")
    p.add_argument("--model", help="model folder or 'demo' (default: demo)")
    p.add_argument("--levels", help="downsample factors fed to the model, e.g. 1,8,32 (default: the model's)")
    p.add_argument("--region", help="y0:y1,x0:x1 in full-resolution pixels, or 'all' (default: all)")
    p.add_argument("--tile", type=int, help="tile (crop) size in pixels (default: the model's crop size)")
    p.add_argument("--overlap", type=int, help="pixels shared by neighbouring tiles, even (default: tile/4)")
    p.add_argument("--foreground", action="store_true", default=None, help="skip tiles without tissue")
    p.add_argument("--mask", metavar="FILE", help="predict only where this 2D mask (.npy/.tif/zarr, slide size "
                   "divided by a whole factor) is non-zero")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", help="auto (default: bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16")
    p.add_argument("--batch-size", dest="batch_size", help="tiles per model call, or auto (default)")
    p.add_argument("--out", metavar="OUT.zarr", help="output store (never overwritten unless --overwrite)")
    p.add_argument("--out-dir", dest="out_dir", metavar="DIR", help="batch: DIR/<slide>.zarr per slide and "
                   "DIR/summary.csv; finished slides are skipped, failed ones reported (docs/cli.md)")
    p.add_argument("--prob-dtype", dest="prob_dtype", metavar="DTYPE",
                   help="how probabilities are stored: uint8 (default, p = v/255), float16, float32, or none "
                   "(labels and tile scores only)")
    p.add_argument("--output-level", dest="output_level", type=int, metavar="N",
                   help="world pixels per output pixel, a power of two (default 1 = full resolution)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", default=None, help="continue a stopped run, skipping finished tiles")
    mode.add_argument("--overwrite", action="store_true", default=None, help="replace an existing output")
    dist = p.add_mutually_exclusive_group()
    dist.add_argument("--workers", type=int, help="run on a local dask cluster with N worker processes")
    dist.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing dask.distributed cluster")
    p.add_argument("--recipe", metavar="FILE", help="load settings from a recipe (.yaml/.json); flags override it")
    p.add_argument("--save-recipe", metavar="FILE", help="also write the recipe used to FILE")
    p.add_argument("--strict", action="store_true", default=None,
                   help="refuse a source chunk missing from its zarr store (default: read it as zeros, warn once "
                   "and report the count)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def recipe_from_args(args):
    from napari_muvit.engine.recipe import Recipe

    base = Recipe.load(args.recipe).to_dict() if args.recipe else {}
    for name in FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            base[name] = value
    if not base.get("source"):
        raise ValueError("no SOURCE slide was given; pass a slide path (or --recipe FILE with a source).")
    if not base.get("out"):
        raise ValueError("no output was given; pass --out OUT.zarr.")
    return Recipe.from_dict(base)


def make_progress(quiet: bool):
    """A tqdm bar on a terminal; nothing in pipes or with --quiet. Returns (callback, close)."""
    if quiet or not sys.stderr.isatty():
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:  # no bar without tqdm; the summary line still comes
        return None, lambda: None

    bar = tqdm(total=0, unit="tile", file=sys.stderr, dynamic_ncols=True)

    def progress(done, total):
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return progress, bar.close


def run(args) -> int:
    if args.out_dir or len(args.source) > 1:  # batch: one store per slide
        return _batch.run(args)
    args.source = args.source[0] if args.source else None
    from napari_muvit.engine import safety
    from napari_muvit.engine.predict import predict

    recipe = recipe_from_args(args)
    inputs = [recipe.source, recipe.model, recipe.mask, args.recipe]
    safety.check_output_path(recipe.out, inputs)
    if recipe.mask and str(recipe.mask).lower().endswith(".npy"):
        safety.check_npy_file(recipe.mask, "mask")
    if recipe.scheduler:  # an unreachable cluster is reported before any output exists
        safety.check_scheduler_reachable(recipe.scheduler)
    if args.save_recipe:  # checked now, written after the run: a refused run leaves no recipe behind
        safety.check_output_path(args.save_recipe, [*inputs, recipe.out], what="recipe file")
        safety.check_new_file(args.save_recipe, bool(args.overwrite), what="recipe file")
    progress, close = make_progress(args.quiet)
    try:
        result = predict(recipe, progress=progress)
    finally:
        close()
    if args.save_recipe:
        with safety.atomic_file(args.save_recipe) as tmp:
            recipe.save(tmp)
    state = "complete" if result.complete else "incomplete (run again with --resume)"
    print(safety.terminal_text(f"wrote {result.path}: {result.task}, {result.tiles_done} tiles predicted, "
                               f"{result.tiles_background} background, {result.tiles_total} in all, {state}, "
                               f"{result.seconds:.1f} s"))
    for warning in getattr(result, "warnings", []) or []:
        print(safety.terminal_text(f"napari-muvit: warning: {warning}"), file=sys.stderr)
    return 0 if result.complete else 1
