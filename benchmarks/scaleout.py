"""In-process `predict` vs a local dask cluster with 1 and with 2 worker processes, on the same region.

    python benchmarks/scaleout.py [--size 2048] [--region 1024] [--batch-size 8]

The model (the demo model when installed, else a demo-shaped random segmenter) is saved to a temporary
folder so that workers load it from disk, as on a real cluster. Times are whole `predict` calls, the
cluster's start-up included (reported separately as ``cluster_start_s``). Each worker process runs torch
with one thread; the in-process run uses the engine's policy (cores - 1 threads). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None):
    from pipeline import build_model

    from napari_muvit.data.synthetic import write_synthetic_slide
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.model import save_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--region", type=int, default=1024)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    p.add_argument("--workers", default="1,2")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="muvit-scale-"))
    slide = write_synthetic_slide(tmp / "slide.zarr", args.size, seed=0)
    model, desc = build_model("auto", torch.device("cpu"))
    model_dir = save_model(model, tmp / "model")
    r0 = (args.size - args.region) // 2
    base = Recipe(source=str(slide), model=str(model_dir), region=(r0, r0 + args.region, r0, r0 + args.region),
                  tile=64, overlap=16, batch_size=args.batch_size, device="cpu")
    out = {"cpu_count": os.cpu_count(), "model": desc, "region": args.region}
    t0 = time.perf_counter()
    res = predict(base.replace(out=str(tmp / "inprocess.zarr")))
    out["tiles"] = res.tiles_total
    out["in_process_s"] = round(time.perf_counter() - t0, 2)
    out["in_process_tiles_per_s"] = round(res.tiles_total / (time.perf_counter() - t0), 2)
    from dask.distributed import LocalCluster

    for n in [int(v) for v in args.workers.split(",")]:
        t0 = time.perf_counter()
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.ERROR):
            start = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = predict(base.replace(out=str(tmp / f"workers{n}.zarr"), workers=n))
        sec = time.perf_counter() - t0
        out[f"workers_{n}_s"] = round(sec, 2)
        out[f"workers_{n}_tiles_per_s"] = round(res.tiles_total / sec, 2)
        out[f"cluster_start_s_{n}"] = round(start, 2)
        assert res.complete
    if "workers_1_s" in out and "workers_2_s" in out:
        out["speedup_2_vs_1"] = round(out["workers_1_s"] / out["workers_2_s"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
