"""Time and peak memory of `measure_labels` on label images of one width and growing height.

    OMP_NUM_THREADS=1 python benchmarks/measure.py [--width 4096] [--heights 2048,8192] [--chunk 1024]

Each label image is a zarr array (3 classes: smooth blobs plus pixel noise, so there are many small
objects), written chunk by chunk. Each measurement runs in a fresh process and reports its peak resident
set size (``ru_maxrss``) and the peak of Python/numpy allocations (``tracemalloc``); object counts are
checked against `scipy.ndimage.label` of the whole image. Prints one JSON object per height.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

NAMES = ["background", "tumour", "stroma"]


def make_labels(path: Path, height: int, width: int, chunk: int, seed: int = 0) -> None:
    import zarr
    from scipy import ndimage

    z = zarr.create_array(str(path), shape=(height, width), chunks=(chunk, chunk), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 64 + 2, width // 64 + 2))
    for y in range(0, height, chunk):
        smooth = ndimage.zoom(coarse[y // 64 : (y + chunk) // 64 + 2], 64, order=1)[:chunk, :width]
        smooth = smooth[: min(chunk, height - y)]
        z[y : y + smooth.shape[0]] = np.digitize(smooth + 0.05 * rng.random(smooth.shape), [0.4, 0.6]) + 1


def child(path: str, chunk: int, check: bool) -> None:
    import resource
    import time
    import tracemalloc

    import zarr

    from napari_muvit.engine.measure import LabelSource, measure_labels

    arr = zarr.open_array(path, mode="r")
    tracemalloc.start()
    t0 = time.perf_counter()
    table = measure_labels(LabelSource(arr, NAMES, chunks=(chunk, chunk)), min_size=50)
    seconds = time.perf_counter() - t0
    peak_py = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out = {"shape": list(arr.shape), "seconds": round(seconds, 2),
           "mpx_per_s": round(arr.shape[0] * arr.shape[1] / seconds / 1e6, 2),
           "peak_alloc_mib": round(peak_py / 2**20, 1),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "objects": {n: table.row("slide", n)["objects"] for n in NAMES}}
    if check:  # after the timed run: the whole image in memory
        from scipy import ndimage

        lab = arr[:]
        direct = {}
        for k, n in enumerate(NAMES):
            comp, _ = ndimage.label(lab == k + 1, structure=np.ones((3, 3)))
            direct[n] = int((np.bincount(comp.ravel())[1:] >= 50).sum())
        out["equal_to_whole_image_labelling"] = direct == out["objects"]
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--heights", default="2048,8192")
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--no-check", action="store_true", help="skip the whole-image comparison")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.chunk, not args.no_check)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for h in (int(v) for v in args.heights.split(",")):
            path = Path(tmp) / f"labels_{h}.zarr"
            make_labels(path, h, args.width, args.chunk)
            cmd = [sys.executable, __file__, "--child", str(path), "--chunk", str(args.chunk)]
            if args.no_check:
                cmd.append("--no-check")
            print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
