"""Peak memory predicting the same region on a 100k x 100k slide and on a 10k x 10k slide.

    python benchmarks/memory.py [--region 4096] [--large 100000] [--small 10000]

Both slides are single-level zarr arrays (chunks 1024) that hold real (random) pixels only around the
predicted region and its context margin; every other chunk is never written (it reads as the fill value),
so the 100k slide costs no disk. Each prediction runs in a fresh process and reports its peak resident set
size (``ru_maxrss``). Prints one JSON object with ``peak_rss_mb_small``, ``peak_rss_mb_large``, ``ratio``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK = 1024


def make_slide(path: Path, size: int, region: tuple[int, int], margin: int, seed: int = 0) -> None:
    """Sparse ``(size, size)`` uint8 zarr: random pixels only in ``[lo - margin, hi + margin)``, chunk aligned."""
    import zarr

    arr = zarr.create_array(str(path), shape=(size, size), chunks=(CHUNK, CHUNK), dtype="uint8", fill_value=40)
    lo = (region[0] - margin) // CHUNK * CHUNK
    hi = -(-(region[1] + margin) // CHUNK) * CHUNK
    rng = np.random.default_rng(seed)
    for y in range(lo, hi, CHUNK):  # identical content in both slides: the generator walks the same chunks
        for x in range(lo, hi, CHUNK):
            arr[y : y + CHUNK, x : x + CHUNK] = rng.integers(0, 255, (CHUNK, CHUNK), dtype=np.uint8)


def child(args) -> None:
    import torch
    import zarr

    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.model import ModelCard, MuViTEncoder, MuViTSegmenter

    torch.manual_seed(0)
    enc = MuViTEncoder(in_channels=1, levels=(1, 4, 16), patch_size=8, num_layers=2, dim=64, heads=2)
    model = MuViTSegmenter(enc, 4).eval()
    model.card = ModelCard(task="segmentation", levels=(1, 4, 16), crop_size=64, class_names=list("abcd"))
    # a one-level list, like a stored pyramid: levels 4 and 16 are averaged from level 0 per crop, and no
    # lazily coarsened dask levels (whose task graphs grow with the slide) are built
    pyramid = open_pyramid([zarr.open_array(args.slide, mode="r")], axes="yx")
    r0, r1 = args.r0, args.r0 + args.region
    recipe = Recipe(region=(r0, r1, r0, r1), tile=64, overlap=16, batch_size=8, out=args.out,
                    normalization={"policy": "fixed", "low": [0], "high": [255]})
    t0 = time.perf_counter()
    res = predict(recipe, model=model, pyramid=pyramid)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": time.perf_counter() - t0, "tiles": res.tiles_total, "complete": res.complete}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--region", type=int, default=4096)
    p.add_argument("--large", type=int, default=100_000)
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--slide", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--r0", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    tmp = Path(tempfile.mkdtemp(prefix="muvit-mem-"))
    r0 = 2048  # the same world region on both slides
    margin = 64 * 16 // 2 + 64  # half the level-16 context crop, plus a tile
    runs = {}
    for name, size in (("small", args.small), ("large", args.large)):
        slide = tmp / f"{name}.zarr"
        make_slide(slide, size, (r0, r0 + args.region), margin)
        out = subprocess.run([sys.executable, __file__, "--child", "--slide", str(slide), "--out",
                              str(tmp / f"{name}_pred.zarr"), "--r0", str(r0), "--region", str(args.region)],
                             capture_output=True, text=True, check=True)
        runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    small, large = runs["small"]["peak_rss_mb"], runs["large"]["peak_rss_mb"]
    print(json.dumps({
        "peak_rss_mb_small": round(small, 1), "peak_rss_mb_large": round(large, 1),
        "ratio": round(large / small, 3), "region": args.region, "slide_small": args.small,
        "slide_large": args.large, "tiles": runs["large"]["tiles"],
        "seconds_small": round(runs["small"]["seconds"], 1), "seconds_large": round(runs["large"]["seconds"], 1),
        "model": "random segmenter (levels 1,4,16, crop 64, patch 8, dim 64, 2 layers)",
    }))


if __name__ == "__main__":
    main()
