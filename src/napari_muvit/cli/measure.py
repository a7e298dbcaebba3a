"""`napari-muvit measure OUT.zarr [...] [--regions FILE.geojson] --out table.csv`: class areas, % of tissue, objects."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  napari-muvit measure pred.zarr --out table.csv
  napari-muvit measure pred.zarr --regions annotations.geojson --min-size 500 --out table.csv
  napari-muvit measure pred.zarr --regions qupath.geojson --out table.csv --geojson measured.geojson
  napari-muvit measure pred.zarr --background glass --connectivity 4                # table to stdout
  napari-muvit measure preds/ --regions-dir annotations/ --out cohort.csv   # every store of a batch folder

Areas are in um^2 and mm^2 when the store knows its pixel size, else in full-resolution px^2.
Tissue = predicted pixels of every class except the background (classes named background/bg, or --background).
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "measure",
        help="per-class areas, %% of tissue and object counts of a prediction, per slide and per region",
        description="Measure a prediction store's labels: per class the area (um^2/mm^2 or px^2), the share of\n"
        "the tissue and the number of connected objects, for the whole prediction and for each annotation of\n"
        "a QuPath GeoJSON file. Reads the labels block by block (memory does not grow with the slide).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", nargs="+", metavar="OUT.zarr",
                   help="prediction store(s) written by napari-muvit predict, or a --out-dir folder of them")
    p.add_argument("--regions", metavar="FILE.geojson",
                   help="also measure inside each polygon annotation of this GeoJSON (QuPath export; one store)")
    p.add_argument("--regions-dir", dest="regions_dir", metavar="DIR",
                   help="several stores: measure store S.zarr also inside DIR/S.geojson when that file exists")
    p.add_argument("--min-size", dest="min_size", type=float, default=0.0, metavar="PX",
                   help="count only objects of at least PX full-resolution px^2 (default 0: every object)")
    p.add_argument("--connectivity", type=int, choices=(4, 8), default=8,
                   help="pixels touching at corners join an object with 8 (default), not with 4")
    p.add_argument("--background", action="append", metavar="CLASS",
                   help="class that is not tissue (repeatable; default: classes named background or bg)")
    p.add_argument("--out", metavar="table.csv", help="write the table as CSV (default: print it)")
    p.add_argument("--geojson", metavar="FILE.geojson",
                   help="write the --regions annotations back with the measurements attached (QuPath import)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out / --geojson files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def stores_of(items) -> list:
    """Store paths: the arguments, or the ``*.zarr`` stores of a single batch folder (`predict --out-dir`)."""
    from pathlib import Path

    paths = [Path(i) for i in items]
    if len(paths) == 1 and paths[0].is_dir() and not (paths[0] / "zarr.json").is_file():
        stores = sorted(p for p in paths[0].iterdir() if p.name.endswith(".zarr") and (p / "zarr.json").is_file())
        if not stores:
            raise ValueError(f"folder {str(paths[0])!r} holds no prediction store (*.zarr); give OUT.zarr paths.")
        return stores
    return paths


def run(args) -> int:
    import sys
    from pathlib import Path

    from napari_muvit.data.qupath import read_qupath
    from napari_muvit.engine.measure import combine, measure_store

    from .predict import make_progress

    stores = stores_of(args.store)
    several = len(stores) > 1
    if args.out and Path(args.out).suffix.lower() != ".csv":
        raise ValueError(f"table file {args.out!r} must end in .csv.")
    if several and (args.regions or args.geojson):
        raise ValueError("--regions and --geojson take one store; for several use --regions-dir DIR "
                         "(DIR/<store>.geojson per store).")
    if args.geojson and not args.regions:
        raise ValueError("--geojson writes the --regions annotations back; give --regions FILE.geojson too.")
    if args.geojson and Path(args.geojson).suffix.lower() not in (".geojson", ".json"):
        raise ValueError(f"GeoJSON file {args.geojson!r} must end in .geojson or .json.")
    if args.regions_dir and not Path(args.regions_dir).is_dir():
        raise FileNotFoundError(f"regions folder {args.regions_dir!r} does not exist.")
    from napari_muvit.engine.safety import check_new_file, check_output_path

    inputs = [str(s) for s in stores] + [args.regions, args.regions_dir]
    for target, what in ((args.out, "table file"), (args.geojson, "GeoJSON file")):
        if target:  # checked before measuring: a refused output costs no reading
            check_output_path(target, inputs, what=what)
            check_new_file(target, args.overwrite, what=what)
    tables, n_regions = {}, 0
    for store in stores:
        name = store.name[: -len(".zarr")] if store.name.endswith(".zarr") else store.name
        regions = None
        if args.regions:
            regions = read_qupath(args.regions)
        elif args.regions_dir and (Path(args.regions_dir) / f"{name}.geojson").is_file():
            regions = read_qupath(Path(args.regions_dir) / f"{name}.geojson")
        n_regions += len(regions or [])
        progress, close = make_progress(args.quiet)
        try:
            tables[name] = measure_store(store, regions, min_size=args.min_size, connectivity=args.connectivity,
                                         background=args.background, progress=progress)
        finally:
            close()
    table = combine(tables) if several else tables[name]
    if args.out:
        table.to_csv(args.out)
        print(f"wrote {args.out}: {len(table.rows)} rows, {len(stores)} store(s), {n_regions} annotation(s), "
              f"areas in {'um^2' if table.physical else 'px^2 (no pixel size in the store)'}")
    else:
        table.to_csv(sys.stdout)
    if args.geojson:
        from napari_muvit.data.qupath import write_qupath

        write_qupath(regions, args.geojson, table.by_region())
        print(f"wrote {args.geojson}: {len(regions)} annotations with measurements")
    return 0
