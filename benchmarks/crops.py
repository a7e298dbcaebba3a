"""Nested crops per second from a 50k x 50k OME-Zarr, against plain zarr slicing of the same windows.

    python benchmarks/crops.py [--size 50000] [--n 300] [--levels 1 8 32] [--crop 256]
                               [--slide tiled|full] [--path EXISTING.zarr]

``--slide tiled`` (default) writes an OME-Zarr v0.5 pyramid whose every chunk holds the same
1024 x 1024 tile rendered by the synthetic generator (realistic compression, written in seconds);
``--slide full`` writes the real synthetic slide with `write_synthetic_slide` (about 15 minutes
for 50k on a 2-core machine). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from napari_muvit.data import open_pyramid, write_synthetic_slide
from napari_muvit.data.geometry import crop_start_index
from napari_muvit.data.synthetic import render_window
from napari_muvit.data.synthetic_writer import _level_shapes, _multiscales

CHUNK = 1024


def write_tiled_slide(path: Path, size: int, seed: int = 0) -> Path:
    """OME-Zarr v0.5 pyramid of ``size`` px whose chunks all repeat one synthetic tile."""
    tile, _ = render_window(0, 0, (CHUNK, CHUNK), seed)
    sizes = _level_shapes(size)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs["ome"] = {"version": "0.5", "multiscales": _multiscales(len(sizes), "benchmark")}
    for k, n in enumerate(sizes):
        c = min(CHUNK, n)
        arr = root.create_array(f"s{k}", shape=(n, n), chunks=(c, c), dtype=np.uint8, fill_value=0)
        for y in range(0, n, c):
            for x in range(0, n, c):
                h, w = min(c, n - y), min(c, n - x)
                arr[y:y + h, x:x + w] = tile[:h, :w]
    return path


def plain_read(arrays, factors, center, levels, size):
    """The same windows read by plain zarr slicing (clipped to the level; no padding, no float)."""
    out = []
    for f in levels:
        a = arrays[factors.index(f)]
        s = crop_start_index(np.asarray(center), f, size)
        lo = np.clip(s, 0, a.shape)
        hi = np.clip(s + size, 0, a.shape)
        out.append(a[lo[0]:hi[0], lo[1]:hi[1]])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=50_000)
    ap.add_argument("--n", type=int, default=300, help="number of nested crops")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--slide", choices=["tiled", "full"], default="tiled")
    ap.add_argument("--path", default=None, help="reuse an existing OME-Zarr instead of writing one")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.path:
            path = Path(args.path)
        elif args.slide == "tiled":
            path = write_tiled_slide(Path(tmp) / "bench.zarr", args.size)
        else:
            path = write_synthetic_slide(Path(tmp) / "bench.zarr", args.size, seed=0)
        write_s = time.perf_counter() - t0

        pyr = open_pyramid(path)
        group = zarr.open_group(str(path), mode="r")
        arrays = [group[f"s{k}"] for k in range(len(pyr.arrays))]
        factors = [int(f) for f in pyr.level_factors]
        rng = np.random.default_rng(0)
        centers = rng.uniform(0, pyr.shape[0], size=(args.n, 2))
        pyr.crops(centers[0], args.levels, args.crop)  # warm-up (imports, first chunk decode)
        plain_read(arrays, factors, centers[0], args.levels, args.crop)
        t_ours = t_plain = 0.0
        for i, c in enumerate(centers):
            # alternate the order so neither side always finds the OS cache warmed by the other
            for side in ((0, 1) if i % 2 else (1, 0)):
                t = time.perf_counter()
                if side == 0:
                    pyr.crops(c, args.levels, args.crop)
                    t_ours += time.perf_counter() - t
                else:
                    plain_read(arrays, factors, c, args.levels, args.crop)
                    t_plain += time.perf_counter() - t
        result = {
            "slide": args.slide if not args.path else str(path),
            "size": pyr.shape[0],
            "levels": args.levels,
            "crop": args.crop,
            "n": args.n,
            "crops_per_s": round(args.n / t_ours, 1),
            "plain_per_s": round(args.n / t_plain, 1),
            "overhead": round(t_ours / t_plain, 3),
            "write_s": round(write_s, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
