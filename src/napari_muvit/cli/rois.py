"""`napari-muvit rois OUT.zarr --score ... --top-k 20 --export rois.geojson|rois.csv`: ranked regions of interest."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  napari-muvit rois pred.zarr --score entropy --top-k 20 --export rois.geojson   # QuPath: File > Import objects
  napari-muvit rois pred.zarr --score class:tumour --regions --export tumour.csv
  napari-muvit rois mae.zarr --score mae_error --top-k 50 --min-distance 2048 --export unusual.geojson

scores: foreground (default for class outputs: the most probable class that is not background),
entropy, class:NAME (class probability or classifier score), mae_error (MAE reconstruction error, the
default for MAE stores), or any column of OUT.zarr/tiles.csv.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "rois",
        help="rank tiles or regions of a prediction by a score and export them (GeoJSON/CSV)",
        description="Rank the tiles (or connected class regions) of a prediction store by a score, suppress\n"
        "neighbours closer than a distance, print the top ones and optionally export them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", metavar="OUT.zarr", help="prediction store written by napari-muvit predict")
    p.add_argument("--score", help="foreground (default), entropy, class:NAME, mae_error, or a tiles.csv column")
    p.add_argument("--top-k", dest="top_k", type=int, default=20, help="number of ROIs (default 20)")
    p.add_argument("--min-distance", dest="min_distance", type=float,
                   help="minimum distance between ROI centres in full-resolution px (default: 2 tile strides)")
    p.add_argument("--regions", action="store_true", help="rank connected regions of a class instead of tiles")
    p.add_argument("--export", action="append", default=[], metavar="FILE",
                   help="write ROIs to FILE.geojson or FILE.csv (repeatable; an existing FILE needs --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace existing export files")


def run(args) -> int:
    from pathlib import Path

    from napari_muvit.engine.export import export_rois
    from napari_muvit.engine.rois import rank_rois, store_default_score
    from napari_muvit.engine.safety import check_new_file, check_output_path, terminal_text

    if not Path(args.store).exists():
        raise FileNotFoundError(f"store {args.store!r} does not exist; give the OUT.zarr written by predict.")
    for target in args.export:
        if Path(target).suffix.lower() not in (".geojson", ".json", ".csv"):
            raise ValueError(f"export file {target!r} must end in .geojson or .csv.")
        check_output_path(target, [args.store], what="export file")
        check_new_file(target, args.overwrite, what="export file")
    if len({str(Path(t).resolve()) for t in args.export}) != len(args.export):
        raise ValueError(f"export files {args.export} name the same file twice; give each export its own name.")
    rois = rank_rois(args.store, score=args.score, top_k=args.top_k, min_distance=args.min_distance,
                     mode="regions" if args.regions else "tiles")
    score_name = args.score or store_default_score(args.store)
    for target in args.export:
        export_rois(rois, target, score_name, class_colors=args.store)
    print(f"{'rank':>4} {'score':>10} {'centre y':>10} {'centre x':>10}  class")
    for r in rois:
        print(f"{r.rank:>4} {r.score:>10.4g} {r.centroid_yx[0]:>10.1f} {r.centroid_yx[1]:>10.1f}  {terminal_text(r.classification)}")
    if args.export:
        print(terminal_text(f"wrote {len(rois)} ROIs to {', '.join(args.export)}"))
    return 0
