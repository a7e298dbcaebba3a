"""Batch prediction over a cohort of slides: one store per slide, a summary table, resumable.

`run_batch(slides, recipe, out_dir)` predicts each slide with the single-slide `predict` into
``out_dir/<slide stem>.zarr`` and keeps ``out_dir/summary.csv`` up to date (rewritten atomically after every
slide, so a killed batch leaves a valid table): one row per slide with its status, tile counts, seconds,
store, error and per-class areas (`engine.measure`, whole prediction).

Resuming is the default: a slide whose store is complete is skipped (its earlier row is kept, or it is
measured again when the table lacks it); a store left incomplete (cancelled, killed, failed) is resumed,
finished tiles kept. ``overwrite=True`` predicts every slide again. A slide that fails (unreadable file,
wrong channels, ...) gets ``status = failed`` and the error sentence in its row; the others continue.

Slide lists (`expand_slides`): slide paths, or one folder (its slide files and ``.zarr`` folders, sorted),
or one ``.txt`` file with a path per line (relative to the list file; ``#`` starts a comment).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from .measure import measure_store, safe_cell
from .recipe import Recipe
from .safety import check_output_path

SLIDE_SUFFIXES = (".zarr", ".tif", ".tiff", ".svs", ".ndpi", ".scn", ".mrxs", ".bif", ".vsi", ".czi", ".nd2",
                  ".lif", ".dcm", ".qptiff", ".btf")
COMPOUND = (".ome.zarr", ".ome.tiff", ".ome.tif", ".ome.btf")
SUMMARY = "summary.csv"
BASE_COLUMNS = ["slide", "status", "tiles", "tiles_done", "tiles_background", "seconds", "store", "area_unit",
                "tissue_area", "error"]
OK_STATUSES = ("done", "skipped")


@dataclass
class SlideRow:
    """One slide's line in ``summary.csv``: status ``done|skipped|failed|incomplete``; areas per class in
    ``area_unit`` (``um^2`` when the store has a pixel size, else ``px^2``)."""

    slide: str
    status: str
    store: str
    tiles: int | None = None
    tiles_done: int | None = None
    tiles_background: int | None = None
    seconds: float | None = None
    area_unit: str = ""
    tissue_area: float | None = None
    areas: dict = field(default_factory=dict)
    error: str = ""

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in BASE_COLUMNS}
        d.update({f"area:{k}": v for k, v in self.areas.items()})
        return d


@dataclass
class BatchResult:
    rows: list
    summary: Path

    @property
    def ok(self) -> bool:
        return all(r.status in OK_STATUSES for r in self.rows)


# ------------------------------------------------------------------------------------------ inputs
def is_slide(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(SLIDE_SUFFIXES) and (path.is_file() or name.endswith(".zarr"))


def slide_stem(path) -> str:
    """``a.ome.tiff`` -> ``a``, ``b.svs`` -> ``b``, ``c.zarr`` -> ``c``."""
    name = Path(path).name
    for suffix in COMPOUND:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def expand_slides(items) -> list[Path]:
    """Slide paths from the command line: paths, or a single folder, or a single ``.txt`` list."""
    items = [Path(i) for i in items]
    if not items:
        raise ValueError("no slides were given; pass slide paths, a folder of slides or a .txt list of paths.")
    if len(items) == 1 and items[0].is_dir() and not items[0].name.lower().endswith(".zarr"):
        slides = sorted(p for p in items[0].iterdir() if is_slide(p))
        if not slides:
            raise ValueError(f"folder {str(items[0])!r} holds no slide ({', '.join(SLIDE_SUFFIXES)}).")
        return slides
    if len(items) == 1 and items[0].suffix.lower() == ".txt":
        if not items[0].is_file():
            raise FileNotFoundError(f"slide list {str(items[0])!r} does not exist.")
        base = items[0].parent
        lines = [ln.split("#", 1)[0].strip() for ln in items[0].read_text().splitlines()]
        slides = [(base / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines if ln]
        if not slides:
            raise ValueError(f"slide list {str(items[0])!r} names no slide; write one path per line.")
        return slides
    return items


def plan_outputs(slides, out_dir) -> list[tuple[Path, Path]]:
    """``(slide, out_dir/<stem>.zarr)`` pairs; refuses two slides with one stem and a store that is, holds or
    lies inside a slide (`safety.check_output_path`)."""
    out_dir = Path(out_dir)
    seen: dict[str, Path] = {}
    pairs = []
    for slide in slides:
        stem = slide_stem(slide)
        if stem in seen:
            raise ValueError(f"slides {str(seen[stem])!r} and {str(slide)!r} would both write {stem}.zarr; "
                             "rename one or run them into different --out-dir folders.")
        seen[stem] = slide
        pairs.append((slide, out_dir / f"{stem}.zarr"))
    slides = [str(s) for s, _ in pairs]
    for _, store in pairs:  # no store may be, hold or sit inside any slide of the batch
        check_output_path(store, slides, what="output store")
    return pairs


# ------------------------------------------------------------------------------------------ running
def run_batch(slides, recipe: Recipe, out_dir, *, overwrite: bool = False, on_slide=None, progress=None,
              cancel=None) -> BatchResult:
    """Predict every slide with ``recipe`` (its ``source``/``out``/``resume``/``overwrite`` are set per slide).

    on_slide: ``callable(index, total, SlideRow)`` after each slide. progress: ``callable(slide_index,
    done, total)`` in tiles of the current slide. cancel: ``callable() -> bool``, checked between batches
    (the current slide's store stays resumable and later slides are not started).
    """
    from .predict import predict

    out_dir = Path(out_dir)
    pairs = plan_outputs(expand_slides(slides), out_dir)
    inputs = [str(s) for s, _ in pairs] + [recipe.model, recipe.mask]
    for _, store in pairs:  # every check before the first slide runs: a refused batch writes nothing
        check_output_path(store, inputs, what="output store")
    check_output_path(out_dir / SUMMARY, inputs, what="summary table")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = out_dir / SUMMARY
    earlier = {} if overwrite else _read_summary(summary)
    planned = {str(slide) for slide, _ in pairs}
    others = [r for s, r in earlier.items() if s not in planned]  # rows of slides not in this run stay
    rows: list[SlideRow] = []
    for i, (slide, store) in enumerate(pairs):
        if cancel is not None and cancel():
            break
        if _store_complete(store) and not overwrite:
            row = earlier.get(str(slide))
            if row is None or row.status not in OK_STATUSES or row.store != str(store):
                row = _measured(SlideRow(str(slide), "skipped", str(store)), store)
            row.status = "skipped"
        else:
            row = SlideRow(str(slide), "failed", str(store))
            try:
                run = recipe.replace(source=str(slide), out=str(store), resume=store.exists() and not overwrite,
                                     overwrite=overwrite)
                result = predict(run, progress=None if progress is None else (lambda d, t, i=i: progress(i, d, t)),
                                 cancel=cancel)
                row.tiles, row.tiles_done = result.tiles_total, result.tiles_done
                row.tiles_background, row.seconds = result.tiles_background, round(result.seconds, 2)
                row.status = "done" if result.complete else "incomplete"
                if result.complete:
                    row = _measured(row, store)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # any failure of one slide is reported in its row; the batch goes on
                row.status, row.error = "failed", _sentence(exc)
        rows.append(row)
        _write_summary(summary, rows + others)
        if on_slide is not None:
            on_slide(i, len(pairs), row)
    _write_summary(summary, rows + others)
    return BatchResult(rows, summary)


def _store_complete(store: Path) -> bool:
    if not (store / "zarr.json").is_file():
        return False
    from .store import OutputStore

    try:
        return OutputStore.open(store).complete
    except (ValueError, FileNotFoundError, OSError):  # unreadable: not complete; predict says why on resume
        return False


def _measured(row: SlideRow, store: Path) -> SlideRow:
    """Fill the row's areas from the store's labels (stores without labels keep empty areas)."""
    try:
        table = measure_store(store)
    except ValueError:  # encoder/MAE stores have no labels: no areas
        return row
    key = "area_um2" if table.physical else "area_px2"
    row.area_unit = "um^2" if table.physical else "px^2"
    for r in table.rows:
        if r["region"] != "slide" or r["label"] in (0, ""):
            if r["region"] == "slide" and r["class"] == "(tissue)":
                row.tissue_area = r[key]
            continue
        row.areas[r["class"]] = r[key]
    return row


def _sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {text}"


# ------------------------------------------------------------------------------------------ summary
def _write_summary(path: Path, rows) -> None:
    classes: list[str] = []
    for r in rows:
        classes += [c for c in r.areas if c not in classes]
    columns = BASE_COLUMNS + [f"area:{c}" for c in classes]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            d = r.to_dict()
            w.writerow([safe_cell(d.get(c)) for c in columns])
    os.replace(tmp, path)


def _read_summary(path: Path) -> dict[str, SlideRow]:
    """Rows of an earlier ``summary.csv`` by slide (empty when there is none or it cannot be read)."""
    if not path.is_file():
        return {}
    out = {}
    try:
        with open(path, newline="") as fh:
            for d in csv.DictReader(fh):
                row = SlideRow(_unquote(d["slide"]), d["status"], _unquote(d["store"]), area_unit=d.get("area_unit", ""),
                               error=_unquote(d.get("error", "")))
                for name in ("tiles", "tiles_done", "tiles_background"):
                    row.__dict__[name] = int(d[name]) if d.get(name) else None
                row.seconds = float(d["seconds"]) if d.get("seconds") else None
                row.tissue_area = float(d["tissue_area"]) if d.get("tissue_area") else None
                row.areas = {k[5:]: float(v) for k, v in d.items() if k.startswith("area:") and v}
                out[row.slide] = row
    except (KeyError, ValueError, csv.Error):
        return {}
    return out


def _unquote(text: str) -> str:
    """Undo `safe_cell`'s ``'`` before ``= + - @``."""
    return text[1:] if text[:1] == "'" and text[1:2] in ("=", "+", "-", "@", "\t", "\r") else text
