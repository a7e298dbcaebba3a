"""`napari-muvit synth OUT.zarr --size N --seed S`: write a synthetic multi-scale slide (OME-Zarr v0.5)."""

from __future__ import annotations

import sys
import time


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic multi-scale slide with ground-truth labels (OME-Zarr v0.5)",
        description="Write a synthetic slide where identical small cells are labelled by the large region "
        "they lie in; regions are recognisable only from sparse structures hundreds of pixels away. The ground "
        "truth (labels/ground_truth) uses the values of a prediction: 1 = background, 2.. = the cell classes.",
    )
    p.add_argument("out", metavar="OUT.zarr", help="output OME-Zarr folder")
    p.add_argument("--size", type=int, default=8192, help="side length in pixels (default 8192)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same slide")
    p.add_argument("--kind", default="regions", choices=["regions", "bearing", "noise"],
                   help="'regions' (labelled benchmark, default: a cell's class is the region it lies in), "
                   "'bearing' (a cell's class is the side its nearest landmark lies on: position is the cue) "
                   "or 'noise' (fast unlabelled test image)")
    p.add_argument("--chunk", type=int, default=1024, help="zarr chunk side in pixels (default 1024)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.zarr if it exists")


def run(args) -> int:
    from napari_muvit.data.synthetic import write_synthetic_slide

    start = time.perf_counter()
    last = [0.0]

    def progress(done, total):
        now = time.perf_counter()
        if sys.stderr.isatty() and (now - last[0] > 1 or done == total):
            last[0] = now
            print(f"\r{done}/{total} chunks", end="" if done < total else "\n", file=sys.stderr)

    try:
        path = write_synthetic_slide(args.out, args.size, seed=args.seed, kind=args.kind, chunk=args.chunk,
                                     overwrite=args.overwrite, progress=progress)
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError as exc:  # permissions, full disk: one line, not a traceback
        raise ValueError(f"cannot write {args.out!r}: {exc.strerror or exc}.") from exc
    print(f"wrote {path} ({args.size} x {args.size} px, kind {args.kind}, seed {args.seed}) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
