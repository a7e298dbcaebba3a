"""GPU throughput of a paper-sized MuViT and of the end-to-end prediction pipeline (CUDA only).

    python benchmarks/gpu.py [--batch-sizes 16,32,64] [--slide 6144] [--region 4096] [--in-memory] [--smoke]

1. Encoder: dim 384, 12 layers, 6 heads, levels (1, 8, 32), 3 x 256^2 crops, patch 8 (3072 tokens per
   tile), bf16 autocast, fused attention (the encoder's default path); tiles/s and tokens/s per batch size,
   timed with CUDA events after warm-up.
2. Pipeline: `predict` with a segmenter on that encoder (token-probe head) over a region of a synthetic
   slide written as an OME-Zarr (1024^2 chunks, zstd; ``--in-memory``: the array itself), in the same process.
   `predict` keeps the probabilities on the GPU: softmax, tile scores, blending, the output conversion and
   the uint8 quantisation run there, inputs are copied from page-locked batches without blocking, and only
   uint8 values and labels come back. Reported: tiles/s end to end, model-only tiles/s on the same tiles in
   memory (inputs already read, probabilities left on the device: what the GPU alone needs), and the
   fraction of the tile loop (first to last finished tile) the GPU is busy: model-only time of the same
   tiles / loop time (``gpu_busy_fraction``); the share of the loop spent inside CUDA-event-timed forward
   passes (``forward_time_fraction``) is an upper bound.
``--smoke`` runs tiny sizes on any device (to check the script, numbers meaningless).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def encoder(args, device):
    from napari_muvit.model import MuViTEncoder

    torch.manual_seed(0)
    if args.smoke:
        return MuViTEncoder(in_channels=1, levels=(1, 8, 32), patch_size=8, num_layers=2, dim=64, heads=2).to(device)
    return MuViTEncoder(in_channels=1, levels=(1, 8, 32), patch_size=8, num_layers=12, dim=384, heads=6).to(device)


def time_call(fn, device, repeats):
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000 / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def encoder_throughput(args, device, dtype) -> list[dict]:
    enc = encoder(args, device).eval()
    S = 32 if args.smoke else 256
    out = []
    for b in [int(v) for v in args.batch_sizes.split(",")]:
        x = torch.randn(b, 3, 1, S, S, device=device)
        half = torch.tensor([(S - 1) / 2 * f for f in (1, 8, 32)], device=device)
        bbox = torch.stack([-half, half], dim=1)[:, :, None].expand(3, 2, 2)[None].expand(b, 3, 2, 2).contiguous()

        def run(x=x, bbox=bbox):
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                enc(x, bbox)

        try:
            for _ in range(3):
                run()
            sec = time_call(run, device, 2 if args.smoke else 10)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            out.append({"batch_size": b, "oom": True})
            continue
        tokens = 3 * (S // 8) ** 2
        out.append({"batch_size": b, "tiles_per_s": round(b / sec, 1), "tokens_per_s": round(b * tokens / sec),
                    "ms_per_batch": round(sec * 1000, 2)})
    return out


def pipeline(args, device) -> dict:
    from napari_muvit.data import open_pyramid
    from napari_muvit.data.synthetic import synthetic_slide
    from napari_muvit.engine.context import resolve
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.tileops import read_batch, run_batch
    from napari_muvit.model import ModelCard, MuViTSegmenter

    S = 32 if args.smoke else 256
    model = MuViTSegmenter(encoder(args, device), 4, head="probe").to(device).eval()
    model.card = ModelCard(task="segmentation", levels=(1, 8, 32), crop_size=S, class_names=list("abcd"))
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp())
    if args.in_memory:
        pyramid = open_pyramid(synthetic_slide(args.slide, seed=0)[0])
    else:
        from napari_muvit.data.synthetic import write_synthetic_slide

        pyramid = open_pyramid(str(write_synthetic_slide(tmp / "slide.zarr", args.slide, seed=0)))
    slide_s = time.perf_counter() - t0
    r0 = (args.slide - args.region) // 2
    bs = int(args.pipeline_batch)
    recipe = Recipe(region=(r0, r0 + args.region, r0, r0 + args.region), tile=S, overlap=S // 8, batch_size=bs,
                    device=str(device.type), out=str(tmp / "out.zarr"),
                    normalization={"policy": "fixed", "low": [0], "high": [255]})
    # model only, same batches in memory
    ctx = resolve(recipe.replace(out=""), model=model, pyramid=pyramid)
    rows, cols = ctx.grid.grid_shape
    tiles = [(i, j) for i in range(rows) for j in range(cols)]
    batches = [tiles[k : k + bs] for k in range(0, len(tiles), bs)]
    data = [read_batch(ctx, b) for b in batches]
    run_batch(ctx, *data[0], batches[0], on_device=True)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for (x, bbox), b in zip(data, batches):
        run_batch(ctx, x, bbox, b, on_device=True)  # as in `predict`: probabilities stay on the device
    sync()
    model_s = time.perf_counter() - t0
    del data
    # end to end, with the model's forward timed by CUDA events
    busy = []
    forward = model.forward

    def timed(x, bbox=None):
        if device.type != "cuda":
            return forward(x, bbox)
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        y = forward(x, bbox)
        e.record()
        busy.append((s, e))
        return y

    model.forward = timed
    stamps = []
    t0 = time.perf_counter()
    res = predict(recipe, model=model, pyramid=pyramid, progress=lambda d, t: stamps.append((time.perf_counter(), d)))
    pipe_s = time.perf_counter() - t0
    sync()
    model.forward = forward
    first = next(t for t, d in stamps if d > 0)
    loop_s = stamps[-1][0] - first
    gpu_s = sum(s.elapsed_time(e) for s, e in busy[1:]) / 1000 if busy else None
    n = len(tiles)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return {"tiles": n, "batch_size": bs, "pipeline_tiles_per_s": round(n / pipe_s, 2),
            "model_tiles_per_s": round(n / model_s, 2), "efficiency": round(model_s / pipe_s, 3),
            "loop_tiles_per_s": round(n / loop_s, 2) if loop_s > 0 else None,
            # time inside forward passes (CUDA events) over the tile loop: an upper bound, since a forward
            # pass that waits for kernel launches from a busy CPU also counts
            "forward_time_fraction": round(gpu_s / loop_s, 3) if gpu_s and loop_s > 0 else None,
            # the GPU time the same tiles need alone (model-only run) over the tile loop: the busy fraction
            "gpu_busy_fraction": round(model_s / loop_s, 3) if loop_s > 0 else None,
            "pipeline_s": round(pipe_s, 2), "model_s": round(model_s, 2), "slide_build_s": round(slide_s, 1),
            "complete": res.complete, "region": args.region, "tile": S, "overlap": S // 8,
            "source": "in-memory array" if args.in_memory else "OME-Zarr (1024^2 chunks)"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", dest="batch_sizes", default="16,32,64")
    p.add_argument("--pipeline-batch", dest="pipeline_batch", default=32)
    p.add_argument("--slide", type=int, default=6144, help="in-memory synthetic slide side (px)")
    p.add_argument("--region", type=int, default=4096)
    p.add_argument("--in-memory", dest="in_memory", action="store_true",
                   help="predict from the in-memory array instead of an OME-Zarr written first")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on any device, to check the script")
    p.add_argument("--skip-pipeline", action="store_true")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and not args.smoke:
        print(json.dumps({"error": "no CUDA GPU on this machine; run with --smoke to check the script"}))
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else None
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)",
           "torch": torch.__version__, "python": sys.version.split()[0], "precision": "bf16" if dtype else "fp32"}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    out["encoder"] = encoder_throughput(args, device, dtype)
    if not args.skip_pipeline:
        out["pipeline"] = pipeline(args, device)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
