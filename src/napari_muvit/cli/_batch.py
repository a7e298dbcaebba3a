"""`napari-muvit predict SLIDE [SLIDE ...] | FOLDER | LIST.txt --out-dir DIR`: the batch form of predict."""

from __future__ import annotations

from ._recipe_fields import FIELDS

PER_SLIDE = ("source", "out", "resume", "overwrite")


def run(args) -> int:
    """One store per slide in ``--out-dir`` and ``DIR/summary.csv``; exit 0 only if every slide succeeded."""
    from napari_muvit.engine.batch import run_batch
    from napari_muvit.engine.recipe import Recipe

    if not args.out_dir:
        raise ValueError("several slides need --out-dir DIR (one store per slide, DIR/<slide>.zarr).")
    if args.out:
        raise ValueError("--out names one store; with --out-dir each slide gets DIR/<slide>.zarr, so drop --out.")
    if args.save_recipe:
        raise ValueError("--save-recipe is for one slide; in a batch every store records the recipe it ran.")
    base = Recipe.load(args.recipe).to_dict() if args.recipe else {}
    slides = list(args.source or []) or ([base["source"]] if base.get("source") else [])
    for name in FIELDS:
        value = getattr(args, name, None)
        if name not in PER_SLIDE and value is not None:
            base[name] = value
    base.update(source="", out="", resume=False, overwrite=False)
    recipe = Recipe.from_dict(base)

    def report(i, n, row):
        if row.status in ("done", "skipped"):
            what = f"{row.status}, {row.tiles_done} tiles predicted, {row.seconds} s" if row.status == "done" else \
                "skipped (already complete)"
        else:
            what = f"{row.status}: {row.error}" if row.error else f"{row.status} (run again to resume)"
        print(f"[{i + 1}/{n}] {row.slide}: {what} -> {row.store}", flush=True)

    result = run_batch(slides, recipe, args.out_dir, overwrite=bool(args.overwrite), on_slide=report)
    counts = {s: sum(r.status == s for r in result.rows) for s in ("done", "skipped", "failed", "incomplete")}
    print(f"wrote {result.summary}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0 if result.ok else 1
