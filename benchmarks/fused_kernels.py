"""What compiling the post-model passes into fused loops would give on this CPU: numba kernels against the
project's torch code, stage by stage, in one process.

    pip install numba      # not a dependency of napari-muvit: only this measurement uses it
    python benchmarks/fused_kernels.py [--repeats 3]

Paper geometry (tile 256, overlap 32, stride 224, 4 classes), 16-tile batches of random logits, one thread.
Each stage in ms of process CPU per tile, the project's code against one numba loop doing the same arithmetic:

* ``softmax``: `torch.softmax` over the class axis into a reused tensor (what `SegmentationOutput.probabilities`
  runs on a CPU) against a per-pixel loop with ``math.exp``;
* ``blend_scores``: `BandStitcher.add_batch` + `stitch.tile_scores` from given probabilities (the band sums
  ``p w`` and ``w``, class means over the owned square, entropy on every second pixel) against one loop;
* ``conversion``: `band_convert.band_output` of a 128 x 8192 band at output level 1 in uint8 (``1 / w``, ``p``,
  argmax, ``floor(255 p + 0.5)``) against one loop, per 224^2 output px (one tile's owned square).

The kernels are checked against the project's numbers before they are timed. The last stdout line is one JSON
object: ``{stage: {"project": ms, "numba": ms}}`` (medians of ``--repeats``), numba's version and whether its
vectorised math library (SVML) was in use: without it ``math.exp`` is a scalar call per value.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np


def kernels():
    from numba import njit

    @njit(cache=False, fastmath=True)
    def softmax(logits, out):
        k_, s_, _ = logits.shape
        for y in range(s_):
            for x in range(s_):
                m = logits[0, y, x]
                for k in range(1, k_):
                    m = max(m, logits[k, y, x])
                total = np.float32(0.0)
                for k in range(k_):
                    v = math.exp(logits[k, y, x] - m)
                    out[k, y, x] = v
                    total += v
                r = np.float32(1.0) / total
                for k in range(k_):
                    out[k, y, x] *= r

    @njit(cache=False, fastmath=True)
    def blend_scores(p, win, acc, wsum, oy, ox, h, dh, dw, scores):
        k_, s_, _ = p.shape
        ent = np.float32(0.0)
        for k in range(k_):
            for y in range(s_):
                for x in range(s_):
                    acc[k, oy + y, ox + x] += p[k, y, x] * win[y, x]
            total = np.float32(0.0)
            for y in range(h, h + dh):
                for x in range(h, h + dw):
                    total += p[k, y, x]
            scores[k] = total / (dh * dw)
            for y in range(h, h + dh, 2):
                for x in range(h, h + dw, 2):
                    q = min(max(p[k, y, x], np.float32(1e-12)), np.float32(1.0))
                    ent -= p[k, y, x] * math.log(q)
        scores[k_] = ent / (((dh + 1) // 2) * ((dw + 1) // 2))
        for y in range(s_):
            for x in range(s_):
                wsum[oy + y, ox + x] += win[y, x]

    @njit(cache=False, fastmath=True)
    def conversion(acc, wsum, values, labels):
        k_, h_, w_ = acc.shape
        for y in range(h_):
            for x in range(w_):
                w = wsum[y, x]
                if w > 0:
                    r = np.float32(1.0) / w
                    best = np.float32(-1.0)
                    lab = 0
                    for k in range(k_):
                        p = acc[k, y, x] * r
                        if p > best:
                            best = p
                            lab = k + 1
                        values[k, y, x] = np.uint8(p * np.float32(255.0) + np.float32(0.5))
                    labels[y, x] = lab
                else:
                    for k in range(k_):
                        values[k, y, x] = 0
                    labels[y, x] = 0

    return softmax, blend_scores, conversion


def cpu_ms(fn, n: int) -> float:
    t = time.process_time()
    fn()
    return 1000 * (time.process_time() - t) / n


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    try:
        import numba
    except ImportError:
        sys.exit("this measurement needs numba (pip install numba); napari-muvit itself does not use it.")
    import torch

    from napari_muvit.engine.band_convert import band_output
    from napari_muvit.engine.grid import TileGrid
    from napari_muvit.engine.stitch import BandStitcher, OutputLayout, tile_scores

    torch.set_num_threads(1)
    k, s, b = 4, 256, 16
    grid = TileGrid((0, 8192, 0, 8192), s, 32)
    layout = OutputLayout((8192, 8192), (0, 8192, 0, 8192), prob_dtype="uint8")
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(b, k, s, s)).astype(np.float32))
    probs = torch.softmax(logits, 1)
    win = grid.window.astype(np.float32)
    tiles = [(1, j) for j in range(1, 1 + b)]  # one row, interior tiles: the crops lie inside the slide
    nb_softmax, nb_blend, nb_convert = kernels()

    # the kernels against the project's numbers (and compiled) before timing
    out = np.empty((k, s, s), np.float32)
    nb_softmax(logits[0].numpy(), out)
    np.testing.assert_allclose(out, probs[0].numpy(), rtol=1e-5, atol=1e-6)
    stitcher = BandStitcher(grid, layout, k)
    stitcher.add_batch(tiles, probs)
    ref_scores = tile_scores(grid, tiles, probs)
    acc = np.zeros((k, 512, 4096), np.float32)
    wsum = np.zeros((512, 4096), np.float32)
    scores = np.zeros(k + 1, np.float32)
    for n in range(len(tiles)):
        nb_blend(probs[n].numpy(), win, acc, wsum, 0, n * grid.stride, 16, 224, 224, scores)
        np.testing.assert_allclose(scores, ref_scores[n], rtol=1e-4, atol=1e-5)
    band_acc = rng.random((k, 128, 8192)).astype(np.float32)
    band_w = (rng.random((128, 8192)) + 0.5).astype(np.float32)
    band_w[:, :100] = 0  # never predicted
    values = np.empty((k, 128, 8192), np.uint8)
    labels = np.empty((128, 8192), np.uint8)
    nb_convert(band_acc, band_w, values, labels)
    _, _, ref_values, ref_labels = band_output(layout, 0, torch.from_numpy(band_acc), torch.from_numpy(band_w))
    assert np.abs(values.astype(int) - ref_values).max() <= 1 and (labels == ref_labels).mean() > 0.999

    band_t, band_wt = torch.from_numpy(band_acc), torch.from_numpy(band_w)
    pooled = torch.empty_like(logits)  # as a run on a CPU: the softmax writes into a reused tensor
    per_band = 128 * 8192 / grid.stride**2  # tiles' owned squares in one band
    runs: dict = {name: {"project": [], "numba": []} for name in ("softmax", "blend_scores", "conversion")}
    for _ in range(args.repeats):
        runs["softmax"]["project"].append(cpu_ms(lambda: torch.softmax(logits, 1, out=pooled), b))
        runs["softmax"]["numba"].append(cpu_ms(lambda: [nb_softmax(logits[n].numpy(), out) for n in range(b)], b))

        def project_blend():  # the same band sums again and again (as the numba loop's), grown in place
            stitcher.add_batch(tiles, probs)
            tile_scores(grid, tiles, probs)

        def numba_blend():
            for n in range(b):
                nb_blend(probs[n].numpy(), win, acc, wsum, 0, n * grid.stride, 16, 224, 224, scores)

        runs["blend_scores"]["project"].append(cpu_ms(project_blend, b))
        runs["blend_scores"]["numba"].append(cpu_ms(numba_blend, b))
        runs["conversion"]["project"].append(cpu_ms(lambda: band_output(layout, 0, band_t, band_wt), per_band))
        runs["conversion"]["numba"].append(cpu_ms(lambda: nb_convert(band_acc, band_w, values, labels), per_band))
    result = {name: {side: round(float(np.median(v)), 3) for side, v in sides.items()} for name, sides in runs.items()}
    result.update({"unit": "ms of process CPU per tile", "numba": numba.__version__,
                   "svml": bool(getattr(numba.config, "USING_SVML", False)), "torch_threads": 1})
    for name in ("softmax", "blend_scores", "conversion"):
        print(f"{name:>13}: project {result[name]['project']:.3f}  numba {result[name]['numba']:.3f} ms per tile")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
