"""Named polygon regions in world coordinates (annotations, measurement and prediction regions).

A `Region` is a set of polygons, each an exterior ring plus optional holes, with vertices as ``(y, x)``
world coordinates (level-1 pixel units, pixel centres on integers; see `geometry`). It knows its extent,
its geometric area and which pixel centres of any array it covers.

**Which pixels a region holds.** A pixel belongs to a region when its *centre* lies inside it, by the
even-odd rule per polygon (so holes are excluded) and the union over the polygons. For a polygon whose
vertices sit on level-1 pixel edges (QuPath annotations, boxes drawn on the pixel grid) no pixel centre
lies on the boundary, so the pixel count times ``f**2`` equals the geometric area exactly; in general a
centre exactly on a boundary is decided half-open, like a pixel range: on a top or left edge it is inside,
on a bottom or right edge outside (crossings with ``y_vertex <= y`` and ``x_crossing <= x``), so two
regions that share an edge never both hold a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import edge_to_centre_frame, index_to_world


def _ring(points, where: str) -> np.ndarray:
    ring = np.asarray(points, dtype=np.float64)
    if ring.ndim != 2 or ring.shape[1] != 2 or not np.all(np.isfinite(ring)):
        raise ValueError(f"{where} must be a list of (y, x) points with finite coordinates, got shape {ring.shape}.")
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]  # stored open; closing is implicit
    if len(ring) < 3:
        raise ValueError(f"{where} has {len(ring)} distinct points; a polygon ring needs at least 3.")
    return ring


def ring_area(ring: np.ndarray) -> float:
    """Unsigned shoelace area of an open ring ``(N, 2)`` of ``(y, x)`` points."""
    y, x = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


@dataclass
class Region:
    """Polygons in world ``(y, x)`` coordinates: ``polygons[i] = [exterior (N, 2), hole (M, 2), ...]``.

    ``name`` labels the region in tables; ``classification`` / ``color`` (0-255 RGB) are carried over from
    annotations (QuPath classes) and are optional.
    """

    name: str
    polygons: list = field(default_factory=list)
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    properties: dict = field(default_factory=dict)

    def __post_init__(self):
        checked = []
        for i, rings in enumerate(self.polygons):
            if isinstance(rings, np.ndarray) and rings.ndim == 2:
                rings = [rings]  # a bare exterior ring
            if not len(rings):
                raise ValueError(f"polygon {i} of region {self.name!r} has no rings.")
            checked.append([_ring(r, f"ring {j} of polygon {i} of region {self.name!r}") for j, r in enumerate(rings)])
        self.polygons = checked

    @classmethod
    def box(cls, name: str, y0: float, y1: float, x0: float, x1: float, **kw) -> Region:
        """The half-open pixel box ``[y0, y1) x [x0, x1)`` (world pixel indices): its polygon runs along the
        pixel edges, so it holds exactly those pixels."""
        if not (y1 > y0 and x1 > x0):
            raise ValueError(f"box {(y0, y1, x0, x1)} is empty; give y0 < y1 and x0 < x1.")
        ey0, ey1, ex0, ex1 = edge_to_centre_frame([y0, y1, x0, x1])  # pixel edges -> world coordinates
        return cls(name, [[np.array([[ey0, ex0], [ey0, ex1], [ey1, ex1], [ey1, ex0]])]], **kw)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(ymin, ymax, xmin, xmax)`` world extent of all vertices."""
        pts = np.concatenate([rings[0] for rings in self.polygons])
        return float(pts[:, 0].min()), float(pts[:, 0].max()), float(pts[:, 1].min()), float(pts[:, 1].max())

    @property
    def area(self) -> float:
        """Geometric area in world px^2: exteriors minus holes (polygons assumed not to overlap)."""
        return float(sum(ring_area(r[0]) - sum(ring_area(h) for h in r[1:]) for r in self.polygons))

    def contains_centres(self, yc, xc) -> np.ndarray:
        """``(len(yc), len(xc))`` bool: whether the grid point ``(yc[i], xc[j])`` (world) is inside the region."""
        yc = np.asarray(yc, dtype=np.float64)
        xc = np.asarray(xc, dtype=np.float64)
        inside = np.zeros((yc.size, xc.size), bool)
        for rings in self.polygons:
            inside |= _even_odd(rings, yc, xc)
        return inside


def _even_odd(rings, yc: np.ndarray, xc: np.ndarray) -> np.ndarray:
    """Even-odd scanline fill of the rings at grid points: per row, the number of edge crossings left of x."""
    ya = np.concatenate([r[:, 0] for r in rings])
    xa = np.concatenate([r[:, 1] for r in rings])
    yb = np.concatenate([np.roll(r[:, 0], -1) for r in rings])
    xb = np.concatenate([np.roll(r[:, 1], -1) for r in rings])
    out = np.zeros((yc.size, xc.size), bool)
    lo, hi = np.minimum(ya, yb), np.maximum(ya, yb)
    rows = np.flatnonzero((yc >= lo.min()) & (yc < hi.max()))
    for i in rows:
        y = yc[i]
        cross = (ya <= y) != (yb <= y)  # half-open in y: a vertex row is counted once
        if not cross.any():
            continue
        a_y, a_x, b_y, b_x = ya[cross], xa[cross], yb[cross], xb[cross]
        xs = np.sort(a_x + (y - a_y) * (b_x - a_x) / (b_y - a_y))
        out[i] = np.searchsorted(xs, xc, side="right") % 2 == 1  # crossings at or left of x: [left, right)
    return out


def label_image(regions, class_names, shape_yx, chunks: int = 2048):
    """Lazy ``(Y, X)`` level-1 label image of ``regions`` for fine-tuning: 0 = unlabelled, ``k + 1`` = class
    ``class_names[k]`` (a region's ``classification``); later regions paint over earlier ones.

    A dask array (each chunk is rasterised when read), so it is accepted wherever a label image is
    (`engine.training.finetune(annotations=...)`) without materialising the slide. Regions without a class,
    or with a class not in ``class_names``, are a ``ValueError``.
    """
    import dask.array as da

    names = [str(n) for n in class_names]
    values = []
    for region in regions:
        if region.classification not in names:
            raise ValueError(f"region {region.name!r} has class {region.classification!r}, which is not one of "
                             f"{', '.join(names)}; classify it or add the class.")
        values.append(names.index(region.classification) + 1)
    dtype = np.uint8 if len(names) < 255 else np.uint16
    shape = tuple(int(s) for s in shape_yx)
    blank = da.zeros(shape, dtype=dtype, chunks=chunks)

    def paint(block, block_info=None):
        (y0, y1), (x0, x1) = block_info[0]["array-location"]
        out = np.zeros((y1 - y0, x1 - x0), dtype)
        for region, value in zip(regions, values):
            ymin, ymax, xmin, xmax = region.bounds
            if ymax < y0 - 1 or ymin > y1 or xmax < x0 - 1 or xmin > x1:
                continue
            out[region.contains_centres(np.arange(y0, y1), np.arange(x0, x1))] = value
        return out

    return blank.map_blocks(paint, dtype=dtype)


def region_mask(regions, shape_yx, factor: int = 1) -> np.ndarray:
    """``(ceil(Y / factor), ceil(X / factor))`` bool mask of the pixels (of a level-``factor`` grid) whose
    centre lies in any region: a prediction mask (`Recipe.mask`, saved as ``.npy``) for slide ``shape_yx``."""
    f = int(factor)
    if f < 1:
        raise ValueError(f"mask factor {factor!r} must be a whole number >= 1.")
    h, w = (-(-int(s) // f) for s in shape_yx)
    yc, xc = index_to_world(np.arange(h), f), index_to_world(np.arange(w), f)
    mask = np.zeros((h, w), bool)
    for region in regions:
        mask |= region.contains_centres(yc, xc)
    return mask
