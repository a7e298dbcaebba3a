"""Host ceiling: what `predict` costs the CPU per tile when the model costs nothing.

    python benchmarks/host_ceiling.py [--size 8192] [--threads 1,2] [--prob-dtype uint8] [--output-level 1]
                                      [--format ome-zarr|ome-tiff]

Paper geometry: levels 1,8,32, tile 256, overlap 32 (stride 224), 4 classes, `engine.testing.ConstantSegmenter`
(constant logits: every cost measured is the host's: reading and decoding the slide, normalisation, softmax,
tile scores, band stitching, quantisation, chunk encoding and writes, the output pyramid, the tile table). Slide:
an RGB uint8 OME-Zarr of ``--size``^2 px (levels 1, 8, 32 stored; 512^2 chunks, zstd) written to a temporary
folder from one repeated 1024^2 random texture (``--format ome-tiff``: the same pixels as a pyramidal OME-TIFF of
512^2 JPEG tiles, as scanners write). One `predict` of the whole slide per thread count (``torch``
threads = reader/writer threads = N, each run in a fresh process so that caches and thread pools start cold);
with ``--pin`` (default) the process is also restricted to N cores (``sched_setaffinity``), so ``scaling`` compares
1 core with N cores even when the process runs more threads than that.

``cpu_ms_per_tile`` = (user + system CPU of the process, all threads, + its children) / tiles, around the whole
`predict` call (the package and the slide readers are imported before it: importing is a one-off ~2 s, not a
per-tile cost); ``tiles_per_s`` = tiles / wall seconds of that call; ``files`` / ``bytes_per_px`` = files and
bytes of the output store / slide pixels. The last stdout line is one JSON object: those keys for the run with
the most threads, ``by_threads`` for every run and ``scaling`` (tiles/s with the most threads / with 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_slide(path: Path, size: int) -> Path:
    """RGB uint8 OME-Zarr v0.5 (c, y, x), levels 1, 8, 32 stored, from a repeated random texture."""
    import zarr

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (3, 1024, 1024), dtype=np.uint8)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    datasets = []
    for k, f in enumerate((1, 8, 32)):
        side = size // f
        arr = root.create_array(str(k), shape=(3, side, side), chunks=(3, 512, 512), dtype=np.uint8,
                                dimension_names=["c", "y", "x"])
        tex = texture[:, ::f, ::f] if f > 1 else texture
        reps = -(-side // tex.shape[1])
        for y in range(0, side, 4096):  # bounded memory: one row of 4096 px at a time
            rows = min(4096, side - y)
            block = np.tile(tex, (1, -(-rows // tex.shape[1]), reps))[:, :rows, :side]
            arr[:, y : y + rows, :] = block
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, float(f), float(f)]},
            {"type": "translation", "translation": [0.0, (f - 1) / 2, (f - 1) / 2]}]})
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": datasets}],
        "omero": {"channels": [{"label": c, "color": col, "window": {"start": 0, "end": 255, "min": 0, "max": 255}}
                               for c, col in (("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF"))]}}
    return path


def write_tiff_slide(path: Path, size: int) -> Path:
    """The same pixels as `write_slide`, as a pyramidal OME-TIFF: levels 1, 8, 32 as SubIFDs, 512^2 JPEG tiles
    (quality 90), the layout of a scanner's slide."""
    import tifffile

    rng = np.random.default_rng(0)
    texture = np.moveaxis(rng.integers(0, 256, (3, 1024, 1024), dtype=np.uint8), 0, -1)
    levels = []
    for f in (1, 8, 32):
        tex = texture[::f, ::f]
        side = size // f
        levels.append(np.tile(tex, (-(-side // tex.shape[0]), -(-side // tex.shape[1]), 1))[:side, :side])
    opts = {"tile": (512, 512), "photometric": "rgb", "compression": "jpeg", "compressionargs": {"level": 90}}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(levels[0], subifds=2, metadata={"axes": "YXS"}, **opts)
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, **opts)
    return path


def store_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def one_run(slide: str, out: str, threads: int, prob_dtype: str, level: int, pin: bool = False) -> dict:
    """One `predict` in this process; returns its measurements."""
    if pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    import torch

    torch.set_num_threads(threads)
    # imported before the clock: a one-off cost (~1.5-2 s), not a per-tile one; `napari_muvit.data` loads its
    # readers on first use, so they are named here
    from napari_muvit.data import Normalizer, Pyramid, foreground_mask, open_pyramid  # noqa: F401
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.testing import ConstantSegmenter

    model = ConstantSegmenter(values=(0.5, -1.0, 2.0, 0.1), levels=(1, 8, 32), patch=16, crop=256, in_channels=3)
    recipe = Recipe(source=slide, out=out, tile=256, overlap=32, batch_size=16, device="cpu", precision="fp32",
                    prob_dtype=prob_dtype, output_level=level, extra={"io_threads": threads})

    def cpu():
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    res = predict(recipe, model=model)
    wall, used = time.perf_counter() - t0, cpu() - c0
    assert res.complete
    files, nbytes = store_size(Path(out))

    h, w = open_pyramid(slide).shape[-2:]
    return {"threads": threads, "cores": len(os.sched_getaffinity(0)), "tiles": res.tiles_total, "seconds": round(wall, 2),
            "cpu_ms_per_tile": round(1000 * used / res.tiles_total, 3),
            "tiles_per_s": round(res.tiles_total / wall, 1), "files": files,
            "bytes_per_px": round(nbytes / (h * w), 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--prob-dtype", default="uint8")
    p.add_argument("--output-level", type=int, default=1)
    p.add_argument("--format", choices=("ome-zarr", "ome-tiff"), default="ome-zarr",
                   help="the slide's file: OME-Zarr (zstd chunks) or pyramidal OME-TIFF (JPEG tiles)")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not restrict a run to N cores")
    p.add_argument("--run-one", nargs=2, metavar=("SLIDE", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_one:
        print(json.dumps(one_run(*args.run_one, args.n, args.prob_dtype, args.output_level, args.pin)))
        return {}
    tmp = Path(tempfile.mkdtemp(prefix="muvit-host-"))
    try:
        if args.format == "ome-tiff":
            slide = write_tiff_slide(tmp / "slide.ome.tif", args.size)
        else:
            slide = write_slide(tmp / "slide.zarr", args.size)
        runs = {}
        for n in [int(v) for v in args.threads.split(",")]:
            out = tmp / f"out{n}.zarr"
            env = dict(os.environ, OMP_NUM_THREADS=str(n))
            proc = subprocess.run([sys.executable, __file__, "--run-one", str(slide), str(out), "--n", str(n),
                                   "--prob-dtype", args.prob_dtype, "--output-level", str(args.output_level)]
                                  + ([] if args.pin else ["--no-pin"]),
                                  capture_output=True, text=True, env=env, check=True)
            runs[n] = json.loads(proc.stdout.strip().splitlines()[-1])
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    top = runs[max(runs)]
    result = {k: top[k] for k in ("cpu_ms_per_tile", "tiles_per_s", "files", "bytes_per_px")}
    result.update({"tiles": top["tiles"], "threads": top["threads"], "by_threads": runs,
                   "scaling": round(top["tiles_per_s"] / runs[min(runs)]["tiles_per_s"], 2),
                   "slide_px": args.size, "slide_format": args.format, "pinned": args.pin, "prob_dtype": args.prob_dtype, "output_level": args.output_level,
                   "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores available"})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
