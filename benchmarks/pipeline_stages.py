"""Where the CPU of one `predict` goes: its stages run one after another in one thread, each timed.

    python benchmarks/pipeline_stages.py [--size 2048] [--region 1024] [--tile 64] [--overlap 16] [--batch-size 8]
    python benchmarks/pipeline_stages.py --host-ceiling [--size 8192]

Same slide, region and model as `benchmarks/pipeline.py`, but without the prefetch and writer threads, so
every stage's process CPU time (``time.process_time``, which includes zarr's own threads) is attributed to
it: ``read`` (crops + normalisation), ``model``, ``scores`` (tile scores), ``stitch`` (band sums),
``band_write`` (complete bands -> output values -> chunk writes), ``save`` (state file), ``finish`` (tile
table and output pyramid), ``setup`` (resolve + store creation). Prints one JSON object (seconds; ``page_faults``:
the minor page faults of each stage, i.e. fresh memory touched). Batches are handled as in the in-process run
(pooled buffers, probabilities as torch tensors, each grid row's tiles added together).

``--host-ceiling``: the geometry of `benchmarks/host_ceiling.py` instead (RGB uint8 OME-Zarr of ``--size``^2 px,
levels 1,8,32, tile 256, overlap 32, batch 16, 4 classes, `ConstantSegmenter`, the whole slide); the JSON then
also gives every stage in ms of process CPU per tile (``*_ms_per_tile``). ``model`` includes the softmax.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None):
    import torch
    from pipeline import build_model

    from napari_muvit.data.synthetic import write_synthetic_slide
    from napari_muvit.engine.context import resolve
    from napari_muvit.engine.device import configure_threads
    from napari_muvit.engine.predict import finish, open_run
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.stitch import BandStitcher

    try:
        from napari_muvit.engine import band_convert as convert
    except ImportError:  # code before the conversion had its own module (for comparisons)
        from napari_muvit.engine import stitch as convert
    finish_band, finish_blocks = convert.finish_band, getattr(convert, "finish_blocks", None)
    from napari_muvit.engine.store import BACKGROUND, prepare_output
    from napari_muvit.engine.tileops import read_batch, run_batch

    try:
        from napari_muvit.engine.tileops import BufferPool
    except ImportError:  # code before the pool existed (for comparisons)
        BufferPool = None

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--region", type=int, default=1024)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    p.add_argument("--host-ceiling", action="store_true", help="host_ceiling.py's geometry and constant model")
    args = p.parse_args(argv)
    threads = configure_threads()
    tmp = Path(tempfile.mkdtemp(prefix="muvit-stages-"))
    if args.host_ceiling:
        from host_ceiling import write_slide

        from napari_muvit.engine.testing import ConstantSegmenter

        slide = write_slide(tmp / "slide.zarr", args.size)
        model = ConstantSegmenter(values=(0.5, -1.0, 2.0, 0.1), levels=(1, 8, 32), patch=16, crop=256, in_channels=3)
        desc = "ConstantSegmenter (4 classes)"
        recipe = Recipe(source=str(slide), tile=256, overlap=32, batch_size=16, device="cpu", precision="fp32",
                        out=str(tmp / "out.zarr"))
    else:
        slide = write_synthetic_slide(tmp / "slide.zarr", args.size, seed=0)
        model, desc = build_model("auto", torch.device("cpu"))
        r0 = (args.size - args.region) // 2
        recipe = Recipe(source=str(slide), region=(r0, r0 + args.region, r0, r0 + args.region), tile=args.tile,
                        overlap=args.overlap, batch_size=args.batch_size, device="cpu", out=str(tmp / "out.zarr"))
    cpu: dict = {}
    faults: dict = {}

    def timed(name, fn, *a, **kw):
        t0, f0 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out = fn(*a, **kw)
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - t0
        faults[name] = faults.get(name, 0) + resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        return out

    wall0 = time.perf_counter()
    ctx = timed("setup", lambda: resolve(recipe, model=model))
    prepare_output(recipe.out, False, False)
    store, book = timed("setup", open_run, ctx, False, False)
    stitcher = BandStitcher(ctx.grid, ctx.layout, len(ctx.output.class_names))
    bands = list(ctx.layout.bands())

    def flush(before_row):
        while bands and stitcher.last_row(bands[0]) < before_row:
            b = bands.pop(0)
            if finish_blocks is not None:  # the band writer's path: blocks converted where they lie
                blocks = stitcher.pop_blocks(b)
                finish_blocks(store, ctx.grid, ctx.layout, b, blocks, book.state, BACKGROUND)
                if hasattr(stitcher, "recycle"):  # as the band writer does (code before it had no recycling)
                    stitcher.recycle(blocks)
            else:  # code before finish_blocks existed (for comparisons)
                finish_band(store, ctx.grid, ctx.layout, b, stitcher.pop(b), book.state, BACKGROUND)
            book.band_written(b)

    # as the in-process run: pooled input batches and (on a CPU) pooled probability tensors, the probabilities
    # left as torch tensors, each grid row's tiles added together after the bands above it are written
    pool = BufferPool() if BufferPool is not None else None
    on_device = {"on_device": True} if "on_device" in inspect.signature(run_batch).parameters else {}
    if pool is not None and "buffers" in inspect.signature(run_batch).parameters:
        on_device["buffers"] = pool
    for batch in book.pending_batches():
        x, bbox = timed("read", read_batch, ctx, batch, *([pool] if pool is not None else []))
        outputs = timed("model", run_batch, ctx, x, bbox, batch, **on_device)
        scores = timed("scores", ctx.output.tile_scores, ctx.grid, batch, outputs)
        for t, s in zip(batch, scores):
            book.mark_predicted(t, s)
        start = 0
        for k in range(1, len(batch) + 1):
            if k == len(batch) or batch[k][0] != batch[start][0]:
                timed("band_write", flush, batch[start][0])
                timed("stitch", stitcher.add_batch, batch[start:k], outputs[start:k])
                start = k
        if pool is not None:
            pool.give((x, outputs))
        timed("save", book.save)
    timed("band_write", flush, float("inf"))
    timed("save", lambda: book.save(force=True))
    timed("finish", finish, ctx, store, book)
    total = sum(cpu.values())
    per_tile = {f"{k}_ms_per_tile": round(1000 * v / book.total, 3) for k, v in cpu.items()} if args.host_ceiling else {}
    print(json.dumps({**{f"{k}_cpu_s": round(v, 3) for k, v in cpu.items()}, "total_cpu_s": round(total, 3), **per_tile,
                      "page_faults": faults,
                      "model_share": round(cpu["model"] / total, 3), "wall_s": round(time.perf_counter() - wall0, 2),
                      "tiles": book.total, "complete": book.complete, "torch_threads": threads, "model": desc}))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
