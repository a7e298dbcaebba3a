"""A 100,000 x 100,000 px slide with the demo model: a full-width stripe measured, the whole slide projected.

    python benchmarks/wholeslide.py [--side 100000] [--stripe-bands 1] [--prob-dtype uint8] [--output-level 1]

Slide: lazily generated (dask), grayscale, every 1024^2 block the same synthetic texture (`data.synthetic`),
so pixels are real but nothing of the slide is ever held in memory; the demo model's levels (1, 4, 16) are
all given. Run: `predict` with ``--foreground`` (tissue mask computed on the slide's coarsest level, as for any
slide) over a stripe the full width of the slide and ``--stripe-bands`` output bands (128 px each) high, in
this process; the output pyramid is built over the stripe as at the end of a real run.

Keys of the last stdout line (one JSON object): ``projected_s_per_slide`` = the stripe's wall time x (tiles of
the slide / tiles of the stripe) - a projection, not a measurement of the whole slide; ``peak_rss_mb`` =
`ru_maxrss` of the process (full width is what sets the stitcher's memory, so the stripe shows the peak a whole
slide would have); ``bytes_per_px`` and ``files_per_mpx`` = output store bytes and files per stripe pixel /
million stripe pixels; plus the stripe's own numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path


def lazy_slide(side: int):
    """[level 1, 4, 16] dask arrays (1, side/f, side/f) uint8 tiling one synthetic 1024^2 texture."""
    import dask.array as da
    import numpy as np

    from napari_muvit.data.synthetic import synthetic_slide

    texture = (np.asarray(synthetic_slide(1024, seed=0)[0], np.float32))
    texture = np.clip(texture if texture.max() > 1.5 else texture * 255, 0, 255).astype(np.uint8)
    levels = []
    for f in (1, 4, 16):
        t = texture[::f, ::f] if f > 1 else texture
        block = t if t.shape[0] >= 256 else np.tile(t, (256 // t.shape[0], 256 // t.shape[1]))
        n = -(-side // f // block.shape[0])
        arr = da.tile(da.from_array(block, chunks=block.shape), (n, n))[: side // f, : side // f]
        levels.append(arr[None])
    return levels


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", type=int, default=100_000)
    p.add_argument("--stripe-bands", type=int, default=1)
    p.add_argument("--prob-dtype", default="uint8")
    p.add_argument("--output-level", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.grid import TileGrid
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.model import load_model

    model = load_model("demo")
    pyr = open_pyramid(lazy_slide(args.side))
    height = 128 * args.output_level * args.stripe_bands
    y0 = (args.side // 2) // height * height  # a stripe of whole bands in the middle of the slide
    region = (y0, y0 + height, 0, args.side)
    tmp = Path(tempfile.mkdtemp(prefix="muvit-wholeslide-"))
    try:
        recipe = Recipe(out=str(tmp / "out.zarr"), model="demo", region=region, foreground=True, device="cpu",
                        batch_size=16, prob_dtype=args.prob_dtype, output_level=args.output_level,
                        extra={"io_threads": args.threads})
        t0 = time.perf_counter()
        res = predict(recipe, model=model, pyramid=pyr)
        wall = time.perf_counter() - t0
        files = [q for q in (tmp / "out.zarr").rglob("*") if q.is_file()]
        nbytes = sum(q.stat().st_size for q in files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tile, overlap = model.card.crop_size, model.card.crop_size // 4
    slide_tiles = TileGrid((0, args.side, 0, args.side), tile, overlap).n_tiles
    stripe_px = height * args.side
    result = {
        "projected_s_per_slide": round(wall * slide_tiles / res.tiles_total, 0),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "bytes_per_px": round(nbytes / stripe_px, 4),
        "files_per_mpx": round(len(files) / (stripe_px / 1e6), 3),
        "stripe": {"region": list(region), "tiles": res.tiles_total, "background": res.tiles_background,
                   "seconds": round(wall, 1), "tiles_per_s": round(res.tiles_total / wall, 1),
                   "files": len(files), "bytes": nbytes},
        "slide_tiles": slide_tiles, "side": args.side, "prob_dtype": args.prob_dtype,
        "output_level": args.output_level, "threads": args.threads,
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores available, CPU",
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
