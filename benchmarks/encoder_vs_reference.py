"""Encoder forward time: napari-muvit vs the reference muvit 0.1.0 package, same weights and inputs.

Needs an environment where both ``muvit`` and ``napari_muvit`` import. CPU, 2 threads, B=4, L=3 levels
(1, 8, 32), C=3, 128x128 crops, patch 8, dim 320, 6 layers, 4 heads (the reference defaults), nested boxes.
Both run under ``torch.inference_mode``; runs are interleaved (ours, reference, ours, ...) after warm-up,
and the median of each is reported. Prints one JSON object.

    python benchmarks/encoder_vs_reference.py [--runs 9] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch


def nested_boxes(B, levels, size, gen):
    boxes = torch.zeros(B, len(levels), 2, 2)
    for b in range(B):
        lo = torch.rand(2, generator=gen) * 1000
        for li in reversed(range(len(levels))):
            ext = (size - 1) * levels[li]
            if li < len(levels) - 1:
                outer = (size - 1) * levels[li + 1]
                lo = boxes[b, li + 1, 0] + (0.2 + 0.6 * torch.rand(2, generator=gen)) * (outer - ext)
            boxes[b, li, 0], boxes[b, li, 1] = lo, lo + ext
    return boxes


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from muvit import MuViTEncoder2d

    from napari_muvit.model import MuViTEncoder

    levels, B, C, S = (1, 8, 32), 4, 3, 128
    torch.manual_seed(0)
    ref = MuViTEncoder2d(in_channels=C, levels=levels, patch_size=8).eval()
    ours = MuViTEncoder(**ref._config).eval()
    ours.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(B, len(levels), C, S, S, generator=gen)
    bbox = nested_boxes(B, levels, S, gen)

    with torch.inference_mode():
        out_ours = ours(x, bbox)
        out_ref = ref(x, bbox)[0]
        for _ in range(args.warmup - 1):
            ours(x, bbox)
            ref(x, bbox)
        t_ours, t_ref = [], []
        for i in range(args.runs):
            # alternate which goes first so slow phases of a shared machine hit both
            pair = [("ours", lambda: ours(x, bbox)), ("ref", lambda: ref(x, bbox))]
            for name, fn in pair if i % 2 == 0 else pair[::-1]:
                (t_ours if name == "ours" else t_ref).append(timed(fn))

    ours_s, ref_s = statistics.median(t_ours), statistics.median(t_ref)
    # per-pair ratios are less sensitive to load changes between pairs on a shared machine
    pair_ratio = statistics.median(o / r for o, r in zip(t_ours, t_ref))
    print(json.dumps(dict(
        ours_s=round(ours_s, 4), reference_s=round(ref_s, 4), ratio=round(ours_s / ref_s, 3),
        max_abs_diff=float((out_ours - out_ref).abs().max()), pair_ratio_median=round(pair_ratio, 3),
        ours_runs_s=[round(t, 4) for t in t_ours], reference_runs_s=[round(t, 4) for t in t_ref],
        runs=args.runs, threads=args.threads, batch=B, levels=list(levels), channels=C, crop=S, patch=8,
        dim=320, layers=6, heads=4, tokens=int(out_ours.shape[1]), torch=torch.__version__,
        machine=platform.machine(), mode="inference_mode", load_avg_1min_end=round(os.getloadavg()[0], 2),
    )))


if __name__ == "__main__":
    main()
