"""`napari-muvit measure OUT.zarr [--regions FILE.geojson] --out table.csv`: class areas, % of tissue, objects."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  napari-muvit measure pred.zarr --out table.csv
  napari-muvit measure pred.zarr --regions annotations.geojson --min-size 500 --out table.csv
  napari-muvit measure pred.zarr --regions qupath.geojson --out table.csv --geojson measured.geojson
  napari-muvit measure pred.zarr --background glass --connectivity 4                # table to stdout

Areas are in um^2 and mm^2 when the store knows its pixel size, else in full-resolution px^2.
Tissue = predicted pixels of every class except the background (classes named background/bg, or --background).
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "measure",
        help="per-class areas, % of tissue and object counts of a prediction, per slide and per region",
        description="Measure a prediction store's labels: per class the area (um^2/mm^2 or px^2), the share of\n"
        "the tissue and the number of connected objects, for the whole prediction and for each annotation of\n"
        "a QuPath GeoJSON file. Reads the labels block by block (memory does not grow with the slide).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", metavar="OUT.zarr", help="prediction store written by napari-muvit predict")
    p.add_argument("--regions", metavar="FILE.geojson",
                   help="also measure inside each polygon annotation of this GeoJSON (QuPath export)")
    p.add_argument("--min-size", dest="min_size", type=float, default=0.0, metavar="PX",
                   help="count only objects of at least PX full-resolution px^2 (default 0: every object)")
    p.add_argument("--connectivity", type=int, choices=(4, 8), default=8,
                   help="pixels touching at corners join an object with 8 (default), not with 4")
    p.add_argument("--background", action="append", metavar="CLASS",
                   help="class that is not tissue (repeatable; default: classes named background or bg)")
    p.add_argument("--out", metavar="table.csv", help="write the table as CSV (default: print it)")
    p.add_argument("--geojson", metavar="FILE.geojson",
                   help="write the --regions annotations back with the measurements attached (QuPath import)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import csv
    import sys
    from pathlib import Path

    from napari_muvit.engine.measure import measure_store, safe_cell

    from .predict import make_progress

    if args.out and Path(args.out).suffix.lower() != ".csv":
        raise ValueError(f"table file {args.out!r} must end in .csv.")
    if args.geojson and not args.regions:
        raise ValueError("--geojson writes the --regions annotations back; give --regions FILE.geojson too.")
    if args.geojson and Path(args.geojson).suffix.lower() not in (".geojson", ".json"):
        raise ValueError(f"GeoJSON file {args.geojson!r} must end in .geojson or .json.")
    regions = None
    if args.regions:
        from napari_muvit.data.qupath import read_qupath

        regions = read_qupath(args.regions)
    progress, close = make_progress(args.quiet)
    try:
        table = measure_store(args.store, regions, min_size=args.min_size, connectivity=args.connectivity,
                              background=args.background, progress=progress)
    finally:
        close()
    if args.out:
        table.to_csv(args.out)
        print(f"wrote {args.out}: {len(table.rows)} rows, {1 + len(regions or [])} regions, "
              f"areas in {'um^2' if table.physical else 'px^2 (no pixel size in the store)'}")
    else:
        w = csv.writer(sys.stdout)
        w.writerow(table.columns)
        for r in table.rows:
            w.writerow([safe_cell(r.get(c)) for c in table.columns])
    if args.geojson:
        from napari_muvit.data.qupath import write_qupath

        write_qupath(regions, args.geojson, table.by_region())
        print(f"wrote {args.geojson}: {len(regions)} annotations with measurements")
    return 0
