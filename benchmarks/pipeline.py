"""End-to-end `predict` throughput vs model-only throughput on the same tiles held in memory.

    python benchmarks/pipeline.py [--size 2048] [--region 1024] [--tile 64] [--overlap 16] [--batch-size 8]

Slide: a synthetic OME-Zarr written to a temporary folder. Model: the demo model when installed, else a
random `MuViTSegmenter` of the demo's shape (levels 1,4,16, crop 64, patch 8, dim 128, 4 layers, 4 classes).
Both measurements use the engine's thread policy (`configure_threads`: cores - 1 torch threads) and the
same batches. Prints one JSON object with ``pipeline_tiles_per_s``, ``model_tiles_per_s``, ``efficiency``
(whole `predict` call incl. store creation and output pyramid) and ``efficiency_steady`` (first to last
finished tile); medians of ``--repeats`` alternating runs of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_model(name: str, device):
    """(model, description): the demo model if asked and installed, else a random demo-shaped segmenter."""
    from napari_muvit.model import ModelCard, MuViTEncoder, MuViTSegmenter, load_model

    if name in ("auto", "demo"):
        try:
            return load_model("demo", device=str(device)), "demo"
        except FileNotFoundError:
            if name == "demo":
                raise
    torch.manual_seed(0)
    enc = MuViTEncoder(in_channels=1, levels=(1, 4, 16), patch_size=8, num_layers=4, dim=128, heads=4)
    model = MuViTSegmenter(enc, 4).to(device).eval()
    model.card = ModelCard(task="segmentation", levels=(1, 4, 16), crop_size=64,
                           class_names=["background", "a", "b", "c"])
    return model, "random segmenter (levels 1,4,16, crop 64, patch 8, dim 128, 4 layers, UNETR head)"


def measure(args) -> dict:
    from napari_muvit.data.synthetic import write_synthetic_slide
    from napari_muvit.engine.context import resolve
    from napari_muvit.engine.device import configure_threads, resolve_device
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.tileops import read_batch, run_batch

    device = resolve_device(args.device)
    threads = configure_threads() if device.type == "cpu" else torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="muvit-bench-"))
    slide = write_synthetic_slide(tmp / "slide.zarr", args.size, seed=0)
    model, desc = build_model(args.model, device)
    r0 = (args.size - args.region) // 2
    recipe = Recipe(source=str(slide), region=(r0, r0 + args.region, r0, r0 + args.region), tile=args.tile,
                    overlap=args.overlap, batch_size=args.batch_size, device=args.device, precision=args.precision,
                    out=str(tmp / "out.zarr"))

    # model only: the same batches, read into memory first
    ctx = resolve(recipe.replace(out=""), model=model)
    rows, cols = ctx.grid.grid_shape
    tiles = [(i, j) for i in range(rows) for j in range(cols)]
    batches = [tiles[k : k + args.batch_size] for k in range(0, len(tiles), args.batch_size)]
    data = [read_batch(ctx, b) for b in batches]
    run_batch(ctx, *data[0], batches[0])  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def model_only():
        sync()
        t0 = time.perf_counter()
        for (x, bbox), b in zip(data, batches):
            run_batch(ctx, x, bbox, b)
        sync()
        return time.perf_counter() - t0

    def pipeline(k):
        stamps = []
        t0 = time.perf_counter()
        result = predict(recipe.replace(out=str(tmp / f"out{k}.zarr")), model=model,
                         progress=lambda d, t: stamps.append((time.perf_counter(), d)))
        total = time.perf_counter() - t0
        first, first_done = next((t, d) for t, d in stamps if d > 0)
        return total, stamps[-1][0] - first, first_done, result.complete

    # alternate the two measurements: on a shared machine, load changes between runs
    model_s, pipe_s, steady = [], [], []
    for k in range(args.repeats):
        model_s.append(model_only())
        total, loop, first_done, complete = pipeline(k)
        pipe_s.append(total)
        steady.append((len(tiles) - first_done) / loop if loop > 0 else float("nan"))
    n = len(tiles)
    model_tps = n / float(np.median(model_s))
    pipe_tps = n / float(np.median(pipe_s))
    return {
        "pipeline_tiles_per_s": round(pipe_tps, 2),
        "model_tiles_per_s": round(model_tps, 2),
        "efficiency": round(pipe_tps / model_tps, 3),
        "efficiency_steady": round(float(np.median(steady)) / model_tps, 3),
        "tiles": n, "repeats": args.repeats, "pipeline_s": [round(v, 2) for v in pipe_s],
        "model_s": [round(v, 2) for v in model_s], "complete": complete, "region": args.region,
        "tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size, "torch_threads": threads,
        "device": str(device),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(), "model": desc, "python": sys.version.split()[0], "torch": torch.__version__,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048, help="synthetic slide side (px)")
    p.add_argument("--region", type=int, default=1024, help="predicted square region side (px)")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    p.add_argument("--model", default="auto", help="auto (demo if installed), demo, or random")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--repeats", type=int, default=3, help="alternating model-only / pipeline runs (medians)")
    print(json.dumps(measure(p.parse_args(argv))))


if __name__ == "__main__":
    main()
