"""Band stitching: tile predictions -> blended, world-aligned output bands, each written by one writer.

A segmentation store covers the **whole slide** at output level ``N`` (a power of two): output pixel
``(r, c)`` covers world ``[r N, (r+1) N) x [c N, (c+1) N)``, so every reader (also those that ignore OME
translations) lays it on the slide. Level-0 chunks are ``(K, ch, cw)`` output px (default ``128 x 8192`` =
1 Mpx, clipped to the image); only chunks that hold predicted pixels are ever written (unwritten chunks
read as 0 and cost no file), so the file count grows with the predicted area / 1 Mpx, not with the tiles.

A **band** is one row of chunks: world rows ``[b ch N, (b+1) ch N)``. Tiles arrive in row-major order and
are accumulated into the open bands their crops overlap: ``acc += p * w`` and ``wsum += w`` (``w`` =
`TileGrid.window`, a partition of unity). Each pixel therefore sums its tiles in row-major order, however
the bands are cut, so a resumed run, a dask run and an uninterrupted run give identical bytes. Band ``b``
is complete once the last tile row whose crop overlaps it (`TileGrid.rows_touching`) has been added; it is
then turned into output pixels (`band_output`) and written as whole chunks (`write_band`), once.

Output values: ``p = acc / wsum`` where the pixel's owning tile (the tile whose owned square holds it) was
predicted, else nothing. At ``N > 1`` an output pixel is the mean of its predicted level-1 pixels. Labels
are ``argmax + 1`` (0 = not predicted). Probabilities are stored as ``uint8`` (``v = floor(255 p + 0.5)``,
read as ``p = v / 255``), ``float16``/``float32``, or not at all (``none``: the image holds the labels as one channel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROB_DTYPES = ("uint8", "float16", "float32", "none")
DEFAULT_CHUNK = (128, 8192)  # output px per level-0 chunk (1 Mpx per file); short bands keep memory low
BLOCK = 2048  # world px: band sums live in column blocks, so memory follows the columns tiles touched


def check_output_level(level) -> int:
    """``level`` as an int if it is a power of two >= 1; else one sentence."""
    try:
        n = int(level)
        ok = float(level) == n and n >= 1 and n & (n - 1) == 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"output level {level!r} must be a power of two such as 1, 2, 4 or 8.")
    return n


def check_prob_dtype(dtype) -> str:
    d = str(dtype).lower()
    if d not in PROB_DTYPES:
        raise ValueError(f"probability dtype {dtype!r} is not one of {', '.join(PROB_DTYPES)}.")
    return d


@dataclass(frozen=True)
class OutputLayout:
    """Where a segmentation run's output pixels and chunks sit (all in world = level-1 px unless stated).

    slide_shape : ``(H, W)`` of the slide.  region : ``(y0, y1, x0, x1)`` predicted.  level : ``N``.
    chunk : requested ``(ch, cw)`` output px (clipped to the image by `chunks`).  prob_dtype : see module.
    """

    slide_shape: tuple[int, int]
    region: tuple[int, int, int, int]
    level: int = 1
    chunk: tuple[int, int] = DEFAULT_CHUNK
    prob_dtype: str = "uint8"

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 output shape ``(h, w)``: the whole slide at ``N`` world px per pixel."""
        return (math.ceil(self.slide_shape[0] / self.level), math.ceil(self.slide_shape[1] / self.level))

    @property
    def chunks(self) -> tuple[int, int]:
        return (min(self.chunk[0], self.shape[0]), min(self.chunk[1], self.shape[1]))

    @property
    def band_px(self) -> int:
        """World rows per band."""
        return self.chunks[0] * self.level

    def bands(self) -> range:
        """Bands the region overlaps, top to bottom."""
        y0, y1 = self.region[:2]
        return range(y0 // self.band_px, (y1 - 1) // self.band_px + 1)

    def band_rows(self, b: int) -> tuple[int, int]:
        """Region-relative level-1 rows ``[a, b)`` of band ``b`` inside the region."""
        y0, y1 = self.region[:2]
        return max(b * self.band_px, y0) - y0, min((b + 1) * self.band_px, y1) - y0

    def band_of(self, rel_row: int) -> int:
        return (rel_row + self.region[0]) // self.band_px

    def output_box(self) -> tuple[int, int, int, int]:
        """Level-0 output px ``(r0, r1, c0, c1)`` covering the region (world-aligned, rounded outwards)."""
        y0, y1, x0, x1 = self.region
        n = self.level
        return (y0 // n, -(-y1 // n), x0 // n, -(-x1 // n))

    def to_dict(self) -> dict:
        return {"version": 2, "extent": "slide", "level": self.level, "chunks": list(self.chunks),
                "prob_dtype": self.prob_dtype}


class BandStitcher:
    """Accumulates tile predictions (row-major) into open bands; see the module docstring."""

    def __init__(self, grid, layout: OutputLayout, n_classes: int, written=()):
        self.grid, self.layout, self.k = grid, layout, int(n_classes)
        self.written = set(written)
        self.open: dict = {}  # band -> {column block: (acc (K, rows, BLOCK), wsum (rows, BLOCK))}
        self.win = grid.window

    def bands_of_row(self, i: int) -> range:
        a, b = self.grid.crop_rows(i)
        return range(self.layout.band_of(a), self.layout.band_of(b - 1) + 1) if b > a else range(0)

    def last_row(self, b: int) -> int:
        rows = self.grid.rows_touching(*self.layout.band_rows(b))
        return rows[-1] if len(rows) else -1

    def add(self, i: int, j: int, pred: np.ndarray) -> None:
        """Add tile ``(i, j)``'s ``(K, S, S)`` prediction to every unwritten band its crop overlaps."""
        g = self.grid
        h, w = g.shape
        oy, ox = i * g.stride - g.overlap // 2, j * g.stride - g.overlap // 2
        xa, xb = max(0, ox), min(w, ox + g.tile)
        for b in self.bands_of_row(i):
            if b in self.written:
                continue
            ra, rb = self.layout.band_rows(b)
            ya, yb = max(oy, ra), min(oy + g.tile, rb, h)
            if ya >= yb or xa >= xb:
                continue
            blocks = self.open.setdefault(b, {})
            for bi in range(xa // BLOCK, (xb - 1) // BLOCK + 1):
                if bi not in blocks:
                    blocks[bi] = (np.zeros((self.k, rb - ra, BLOCK), np.float32), np.zeros((rb - ra, BLOCK), np.float32))
                acc, wsum = blocks[bi]
                ca, cb = max(xa, bi * BLOCK), min(xb, (bi + 1) * BLOCK)
                win = self.win[ya - oy : yb - oy, ca - ox : cb - ox]
                acc[:, ya - ra : yb - ra, ca - bi * BLOCK : cb - bi * BLOCK] += (
                    pred[:, ya - oy : yb - oy, ca - ox : cb - ox] * win)
                wsum[ya - ra : yb - ra, ca - bi * BLOCK : cb - bi * BLOCK] += win

    def pop(self, b: int):
        """`assemble` band ``b`` (None when no tile touched it) and forget it."""
        self.written.add(b)
        blocks = self.open.pop(b, None)
        return self.assemble(blocks) if blocks else None

    def assemble(self, blocks: dict) -> list:
        """Column blocks -> ``[acc (K, rows, hi - lo), wsum (rows, hi - lo), lo, hi]``: region columns
        ``[lo, hi)`` from the first to the last touched block (untouched blocks between them are 0)."""
        w = self.grid.shape[1]
        first, last = min(blocks), max(blocks)
        lo, hi = first * BLOCK, min(w, (last + 1) * BLOCK)
        k, rows = next(iter(blocks.values()))[0].shape[:2]
        acc = np.zeros((k, rows, hi - lo), np.float32)
        wsum = np.zeros((rows, hi - lo), np.float32)
        for bi, (a, s) in blocks.items():
            c0, c1 = bi * BLOCK - lo, min(hi, (bi + 1) * BLOCK) - lo
            acc[:, :, c0:c1], wsum[:, c0:c1] = a[:, :, : c1 - c0], s[:, : c1 - c0]
        return [acc, wsum, lo, hi]

    def restore(self, b: int, band) -> None:
        """Put an assembled band (`assemble`, e.g. saved by a cancelled run) back as column blocks."""
        acc, wsum, lo, hi = band
        blocks = self.open.setdefault(b, {})
        for bi in range(lo // BLOCK, (hi - 1) // BLOCK + 1):
            a = np.zeros((acc.shape[0], acc.shape[1], BLOCK), np.float32)
            s = np.zeros((acc.shape[1], BLOCK), np.float32)
            c0, c1 = bi * BLOCK - lo, min(hi, (bi + 1) * BLOCK) - lo
            a[:, :, : c1 - c0], s[:, : c1 - c0] = acc[:, :, c0:c1], wsum[:, c0:c1]
            blocks[bi] = (a, s)


def owner_foreground(grid, layout: OutputLayout, b: int, state, background_code, lo=0, hi=None) -> np.ndarray | None:
    """``(rows, hi - lo)`` bool: whether each pixel of band ``b`` (region columns ``[lo, hi)``) lies in a
    predicted tile's owned square (None when every owner is predicted)."""
    ra, rb = layout.band_rows(b)
    s = grid.stride
    hi = grid.shape[1] if hi is None else hi
    rows = state[ra // s : (rb - 1) // s + 1, lo // s : (hi - 1) // s + 1] != background_code
    if rows.all():
        return None
    cols = np.arange(lo, hi) // s - lo // s
    return rows[(np.arange(ra, rb) // s) - ra // s][:, cols]


def band_output(layout: OutputLayout, b: int, acc, wsum, owner=None, lo: int = 0):
    """Blended band (region columns ``[lo, lo + acc.shape[-1])``) -> ``(r0, c0, values (C, h, w), labels (h, w))``
    in level-0 output px (see module)."""
    y0, _, x0, _ = layout.region
    x0, x1 = x0 + lo, x0 + lo + acc.shape[-1]
    ra, rb = layout.band_rows(b)
    n = layout.level
    pred = wsum > 0
    if owner is not None:
        pred &= owner
    inv = np.zeros_like(wsum)
    np.divide(np.float32(1), wsum, out=inv, where=pred)
    probs = acc * inv  # 0 where nothing was predicted
    r0, c0 = (y0 + ra) // n, x0 // n
    if n > 1:  # mean of the predicted level-1 pixels of each world-aligned n x n block
        r1, c1 = -(-(y0 + rb) // n), -(-x1 // n)
        dy, dx = y0 + ra - r0 * n, x0 - c0 * n
        big = np.zeros((probs.shape[0], (r1 - r0) * n, (c1 - c0) * n), np.float32)
        cnt = np.zeros(big.shape[1:], np.float32)
        big[:, dy : dy + probs.shape[1], dx : dx + probs.shape[2]] = probs
        cnt[dy : dy + probs.shape[1], dx : dx + probs.shape[2]] = pred
        k = probs.shape[0]
        sums = big.reshape(k, r1 - r0, n, c1 - c0, n).sum(axis=(2, 4))
        count = cnt.reshape(r1 - r0, n, c1 - c0, n).sum(axis=(1, 3))
        pred = count > 0
        probs = np.divide(sums, count, out=np.zeros_like(sums), where=pred)
    labels = argmax_channels(probs, np.uint8 if probs.shape[0] < 255 else np.uint16)
    labels += 1
    labels[~pred] = 0
    return r0, c0, encode_probs(probs, layout.prob_dtype, labels), labels


def argmax_channels(p: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """``argmax`` over axis 0 of ``(K, h, w)`` (first maximum wins, as numpy's), one pass per channel:
    numpy's own argmax along a leading axis is about 20x slower."""
    best = p[0].copy()
    idx = np.zeros(p.shape[1:], dtype)
    for k in range(1, p.shape[0]):
        better = p[k] > best
        idx[better] = k
        np.maximum(best, p[k], out=best)
    return idx


def encode_probs(probs: np.ndarray, dtype: str, labels: np.ndarray | None = None) -> np.ndarray:
    """Float probabilities in [0, 1] -> stored values (``uint8``: ``round(255 p)``; ``none``: the labels)."""
    if dtype == "uint8":  # p in [0, 1]: floor(255 p + 0.5) is the nearest of 0..255
        v = np.multiply(probs, np.float32(255.0), dtype=np.float32)
        v += np.float32(0.5)
        np.clip(v, 0, 255.5, out=v)
        return v.astype(np.uint8)
    if dtype == "none":
        return labels[None].astype(np.uint8 if labels.dtype == np.uint8 else labels.dtype)
    return probs.astype(dtype, copy=False)


def decode_probs(values, dtype: str):
    """Stored probability values -> float32 probabilities (works on numpy and dask arrays)."""
    if dtype == "uint8":
        return values.astype(np.float32) / np.float32(255.0)
    return values.astype(np.float32)


def write_band(store, layout: OutputLayout, b: int, r0: int, c0: int, values, labels) -> int:
    """Write band ``b``'s output (from `band_output`) as whole chunks; returns the chunks written."""
    ch, cw = layout.chunks
    h, w = layout.shape
    R0, R1 = b * ch, min((b + 1) * ch, h)
    c1 = c0 + values.shape[-1]
    n = 0
    for c in range(c0 // cw, (c1 - 1) // cw + 1):
        C0, C1 = c * cw, min((c + 1) * cw, w)
        lo, hi = max(c0, C0), min(c1, C1)
        block = np.zeros((values.shape[0], R1 - R0, C1 - C0), values.dtype)
        lab = np.zeros((R1 - R0, C1 - C0), labels.dtype)
        rows = slice(r0 - R0, r0 - R0 + values.shape[1])
        block[:, rows, lo - C0 : hi - C0] = values[:, :, lo - c0 : hi - c0]
        lab[rows, lo - C0 : hi - C0] = labels[:, lo - c0 : hi - c0]
        store.write_chunk((R0, C0), block, lab)
        n += 1
    return n


def finish_band(store, grid, layout: OutputLayout, b: int, band, state, background_code) -> None:
    """Convert and write a band's touched columns (nothing to write when no tile touched it)."""
    if band is None:
        return
    acc, wsum, lo, hi = band
    owner = owner_foreground(grid, layout, b, state, background_code, lo, hi)
    r0, c0, values, labels = band_output(layout, b, acc, wsum, owner, lo)
    write_band(store, layout, b, r0, c0, values, labels)
