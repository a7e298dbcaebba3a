"""Per-class measurements of a prediction's labels: areas, % of tissue and object counts, per region.

For the whole predicted region and for each `Region` (annotations, ROIs), per class:

* **area**: label pixels of the class times ``f**2`` world px^2 (``f`` = world px per level-0 label pixel:
  1 for segmentation, the tile stride for classifiers), in um^2 and mm^2 when the store knows its physical
  pixel size (``pixel_size`` and ``unit``), else in px^2 only (level-1 pixels; the table has no um^2 columns).
* **% of tissue**: the class's area over the tissue area, where *tissue* = predicted pixels (label != 0)
  of every class except the background class(es) (`rois.is_background`: names ``background`` / ``bg``,
  any case; or the names given in ``background=``). When no class is background, tissue is every
  predicted pixel. Pixels that were not predicted (label 0: skipped tiles, outside a mask) are neither
  tissue nor background. The background class itself gets no percentage.
* **objects**: connected components of the class (8-connected by default, 4 with ``connectivity=4``) with
  at least ``min_size`` world px^2 (``ceil(min_size / f**2)`` label pixels); a component is clipped to the
  region it is measured in.

**Memory flat in slide size.** Labels level 0 is read in blocks of about ``block`` x ``block`` pixels
(whole chunks), one row of blocks at a time; objects are counted across block borders by
`components.StreamingComponents`, exactly (equal to labelling the whole array at once). Memory is one block
plus one pixel row of component ids plus the components of one row of blocks, whatever the slide's height.

A region holds the label pixels whose centre lies inside it (`data.regions`); only the blocks that meet
its extent are read.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.geometry import centre_index_range, pixel_centre
from ..data.regions import Region
from .components import StreamingComponents
from .rois import is_background

TISSUE, NOT_PREDICTED = "(tissue)", "(not predicted)"
_TO_UM = {"micrometer": 1.0, "micron": 1.0, "um": 1.0, "µm": 1.0, "nanometer": 1e-3, "nm": 1e-3,
          "millimeter": 1e3, "mm": 1e3, "centimeter": 1e4, "cm": 1e4, "meter": 1e6, "m": 1e6}


def um_per_unit(unit) -> float | None:
    """Micrometres per ``unit`` (OME / UDUNITS names and short forms), or None for unknown units."""
    return _TO_UM.get(str(unit).strip().lower()) if unit else None


@dataclass
class LabelSource:
    """A 2D labels array (value ``k + 1`` = class ``k``, 0 = not predicted) placed in world coordinates.

    ``labels``: anything sliceable to numpy (zarr, dask, numpy) ``(H, W)``; ``factor``: world px per pixel;
    ``origin_yx``: world coordinate where pixel ``(0, 0)`` starts (the store region's corner);
    ``pixel_size``: physical size of a level-1 pixel ``(py, px)`` in ``unit``, or None.
    """

    labels: object
    class_names: list
    factor: float = 1.0
    origin_yx: tuple = (0.0, 0.0)
    pixel_size: tuple | None = None
    unit: str | None = None
    chunks: tuple | None = None


@dataclass
class MeasureTable:
    """Rows of measurements (one per region and class, plus a tissue and a not-predicted row per region)."""

    rows: list = field(default_factory=list)
    physical: bool = False
    min_size: float = 0.0
    lead: list = field(default_factory=list)  # extra first columns (``store`` in a cohort table)

    @property
    def columns(self) -> list[str]:
        cols = [*self.lead, "region", "region_class", "class", "label", "pixels", "area_px2"]
        if self.physical:
            cols += ["area_um2", "area_mm2"]
        return cols + ["percent_of_tissue", "objects", "min_object_px2", "region_area_px2"]

    def row(self, region: str, cls: str):
        """The row of class ``cls`` in region ``region`` (KeyError if absent)."""
        for r in self.rows:
            if r["region"] == region and r["class"] == cls:
                return r
        raise KeyError(f"no row for class {cls!r} in region {region!r}")

    def to_csv(self, path) -> Path:
        return write_csv(self, path)

    def by_region(self) -> dict:
        """Region name -> ``{"<class>: area um^2" (or px^2), "<class>: % of tissue", "<class>: objects"}``,
        numbers only: the measurements a QuPath annotation carries (`data.qupath.write_qupath`)."""
        area, unit = ("area_um2", "um^2") if self.physical else ("area_px2", "px^2")
        out: dict = {}
        for r in self.rows:
            values = out.setdefault(r["region"], {})
            if r["class"] == NOT_PREDICTED:
                continue
            values[f"{r['class']}: area {unit}"] = r[area]
            if r["percent_of_tissue"] is not None and r["class"] != TISSUE:
                values[f"{r['class']}: % of tissue"] = r["percent_of_tissue"]
            if r["objects"] is not None:
                values[f"{r['class']}: objects"] = r["objects"]
        return out


def combine(tables: dict) -> MeasureTable:
    """One cohort table of ``{store name: MeasureTable}``: a ``store`` column first; um^2 columns when any
    store has a pixel size (empty for the stores without one)."""
    out = MeasureTable(physical=any(t.physical for t in tables.values()), lead=["store"],
                       min_size=max((t.min_size for t in tables.values()), default=0.0))
    for name, table in tables.items():
        out.rows += [{"store": name, **r} for r in table.rows]
    return out


# ------------------------------------------------------------------------------------------ reading
def open_labels(store) -> LabelSource:
    """The labels pyramid's level 0 of a prediction store, with its placement (read through `OutputStore.open`)."""
    from .store import OutputStore

    out = OutputStore.open(store)
    levels = out.label_levels(complete=False)  # level 0 is final as soon as its tiles are written
    if not levels or not out.meta.get("labels"):
        raise ValueError(
            f"store {str(store)!r} has no class labels (task {out.meta.get('task')!r}); measurements need a "
            "segmentation or classification prediction."
        )
    labels = levels[0]
    chunks = tuple(int(c[0]) for c in labels.chunks) if hasattr(labels, "chunks") else None
    ps = out.meta.get("pixel_size")
    return LabelSource(labels=labels, class_names=list(out.meta["labels"]), factor=out.factor,
                       origin_yx=out.origin_yx, pixel_size=tuple(ps) if ps else None, unit=out.meta.get("unit"),
                       chunks=chunks)


# ------------------------------------------------------------------------------------------ measure
def measure_store(store, regions=None, *, min_size: float = 0.0, connectivity: int = 8, background=None,
                  block: int = 1024, progress=None) -> MeasureTable:
    """`measure_labels` of a prediction store's labels (see the module docstring)."""
    return measure_labels(open_labels(store), regions, min_size=min_size, connectivity=connectivity,
                          background=background, block=block, progress=progress)


def measure_labels(source: LabelSource, regions=None, *, min_size: float = 0.0, connectivity: int = 8,
                   background=None, block: int = 1024, progress=None) -> MeasureTable:
    """Measure ``source`` over the whole array (region ``slide``) and each of ``regions`` (`Region` list).

    min_size: smallest object counted, world px^2. connectivity: 8 or 4. background: class names that are
    not tissue (default: classes named background/bg). progress: ``callable(done, total)`` in blocks.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity {connectivity!r} must be 4 or 8.")
    if not (min_size >= 0 and math.isfinite(min_size)):
        raise ValueError(f"minimum object size {min_size!r} must be a number of px^2 >= 0.")
    names = [str(n) for n in source.class_names]
    bg = _background_classes(names, background)
    f = float(source.factor)
    min_pixels = max(1, math.ceil(min_size / (f * f) - 1e-9))
    phys = um_per_unit(source.unit) if source.pixel_size else None
    um2_per_px2 = None if phys is None else float(np.prod(source.pixel_size[-2:])) * phys**2
    H, W = source.labels.shape[-2:]
    step_y, step_x = _block_shape(source.chunks, block)
    passes = [(None, (0, H, 0, W))]
    for region in regions or []:
        if not isinstance(region, Region):
            raise ValueError(f"measurement regions must be Region objects, got {type(region).__name__}.")
        passes.append((region, _pixel_extent(region, source, H, W)))
    total = sum(_n_blocks(ext, step_y, step_x) for _, ext in passes)
    done = [0]

    def tick():
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    table = MeasureTable(physical=um2_per_px2 is not None, min_size=float(min_size))
    used: dict[str, int] = {}
    for region, extent in passes:
        counts, objects = _measure_pass(source, region, extent, len(names), step_y, step_x, min_pixels,
                                        connectivity, tick)
        name = "slide" if region is None else str(region.name)
        used[name] = used.get(name, 0) + 1
        if used[name] > 1:  # every region gets its own rows: "slide" and repeated names get a number
            name = f"{name} ({used[name]})"
        rclass = "" if region is None else (region.classification or "")
        rarea = H * W * f * f if region is None else region.area
        table.rows += _rows(name, rclass, names, bg, counts, objects, f, um2_per_px2, min_size, rarea)
    return table


def _background_classes(names, background) -> set[int]:
    if background is None:
        return {k for k, n in enumerate(names) if is_background(n)}
    wanted = [background] if isinstance(background, str) else list(background)
    missing = [b for b in wanted if b not in names]
    if missing:
        raise ValueError(f"background class {missing[0]!r} is not a class of this prediction; use one of "
                         f"{', '.join(names)}.")
    return {names.index(b) for b in wanted}


def _block_shape(chunks, block) -> tuple[int, int]:
    """A block side per axis: a whole number of chunks near ``block`` (chunk-aligned reads)."""
    if not chunks:
        return int(block), int(block)
    return tuple(max(1, round(block / c)) * int(c) for c in chunks[-2:])


def _pixel_extent(region: Region, source: LabelSource, H: int, W: int) -> tuple[int, int, int, int]:
    """Half-open label-pixel box that holds every pixel centre inside ``region`` (clipped to the array)."""
    ymin, ymax, xmin, xmax = region.bounds
    f = float(source.factor)
    oy, ox = source.origin_yx
    (i0, j0), (i1, j1) = centre_index_range((ymin, xmin), (ymax, xmax), f, (oy, ox))
    return max(0, int(i0)), min(H, int(i1)), max(0, int(j0)), min(W, int(j1))


def _n_blocks(extent, sy, sx) -> int:
    a0, a1, b0, b1 = extent
    if a1 <= a0 or b1 <= b0:
        return 0
    return len(_edges(a0, a1, sy)) * len(_edges(b0, b1, sx))


def _edges(lo, hi, step) -> list[tuple[int, int]]:
    """Blocks ``[s, e)`` covering ``[lo, hi)`` aligned to multiples of ``step`` (chunk boundaries)."""
    out, s = [], lo
    while s < hi:
        e = min(hi, (s // step + 1) * step)
        out.append((s, e))
        s = e
    return out


def _measure_pass(source, region, extent, n_classes, sy, sx, min_pixels, connectivity, tick):
    """Pixel counts ``(K+1,)`` (index 0 = not predicted) and object counts ``(K+1,)`` inside one region."""
    from skimage.measure import label as cc_label

    a0, a1, b0, b1 = extent
    counts = np.zeros(n_classes + 1, np.int64)
    tracker = StreamingComponents(b1 - b0, n_classes, min_pixels, connectivity)
    if a1 <= a0 or b1 <= b0:
        return counts, tracker.objects
    f = float(source.factor)
    oy, ox = source.origin_yx
    for ra, rb in _edges(a0, a1, sy):
        tracker.start_row()
        for ca, cb in _edges(b0, b1, sx):
            vals = np.asarray(source.labels[ra:rb, ca:cb]).astype(np.int64, copy=False)
            if region is not None:
                inside = region.contains_centres(pixel_centre(np.arange(ra, rb), f, oy),
                                                 pixel_centre(np.arange(ca, cb), f, ox))
                vals = np.where(inside, vals, -1)  # -1: outside the region, neither counted nor an object
                counts += np.bincount(vals[inside].ravel(), minlength=n_classes + 1)[: n_classes + 1]
            else:
                counts += np.bincount(vals.ravel(), minlength=n_classes + 1)[: n_classes + 1]
            objs = np.where(vals > 0, vals, 0)
            local = cc_label(objs, background=0, connectivity=2 if connectivity == 8 else 1)
            tracker.add_block(local, objs, ca - b0)
            tick()
        tracker.end_row()
    tracker.finish()
    return counts, tracker.objects


def _rows(name, rclass, names, bg, counts, objects, f, um2_per_px2, min_size, region_area):
    px2 = f * f
    tissue = sum(int(counts[k + 1]) for k in range(len(names)) if k not in bg)
    rows = []

    def row(cls, label, pixels, pct, objs):
        area = pixels * px2
        r = {"region": name, "region_class": rclass, "class": cls, "label": label, "pixels": int(pixels),
             "area_px2": area}
        if um2_per_px2 is not None:
            r["area_um2"] = area * um2_per_px2
            r["area_mm2"] = area * um2_per_px2 / 1e6
        r.update({"percent_of_tissue": pct, "objects": objs, "min_object_px2": min_size,
                  "region_area_px2": region_area})
        rows.append(r)

    for k, cls in enumerate(names):
        pct = None if k in bg or tissue == 0 else 100.0 * counts[k + 1] / tissue
        row(cls, k + 1, counts[k + 1], pct, int(objects[k + 1]))
    row(TISSUE, "", tissue, 100.0 if tissue else None, None)
    row(NOT_PREDICTED, 0, counts[0], None, None)
    return rows


# ------------------------------------------------------------------------------------------ CSV
def safe_cell(value) -> str:
    """A CSV cell: numbers written plainly, None empty, text through `safety.csv_cell` (a leading ``= + - @``
    that is not a number gets a ``'``, so a spreadsheet shows it as text)."""
    from .safety import csv_cell

    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.10g}"
    return csv_cell(str(value))


def write_csv(table: MeasureTable, path) -> Path | None:
    """Write ``table`` to ``path`` (temporary sibling, then rename), or to an open text stream."""
    if hasattr(path, "write"):
        _write_rows(path, table)
        return None
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        _write_rows(fh, table)
    os.replace(tmp, path)
    return path


def _write_rows(fh, table: MeasureTable) -> None:
    w = csv.writer(fh)
    w.writerow(table.columns)
    for r in table.rows:
        w.writerow([safe_cell(r.get(c)) for c in table.columns])
