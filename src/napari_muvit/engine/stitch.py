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
then turned into output pixels and written as whole chunks, once (`band_convert`).

Also here: each tile's scores (`tile_scores`), computed from its own prediction.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from .output_layout import DEFAULT_CHUNK, PROB_DTYPES, OutputLayout, check_output_level, check_prob_dtype  # noqa: F401

BLOCK = 2048  # world px: band sums live in column blocks, so memory follows the columns tiles touched


class BandStitcher:
    """Accumulates tile predictions (row-major) into open bands; see the module docstring.

    The sums are torch tensors on ``device`` (the model's), so on a GPU blending, the output conversion and
    the quantisation run there and only the stored values (uint8 by default) cross back; on a CPU it is the
    same code. Each step is one elementwise IEEE operation (``p * w``, then ``+=``), as the numpy reference.
    """

    def __init__(self, grid, layout: OutputLayout, n_classes: int, written=(), device="cpu"):
        self.grid, self.layout, self.k = grid, layout, int(n_classes)
        self.written = set(written)
        self.open: dict = {}  # band -> {column block: (acc (K, rows, BLOCK), wsum (rows, BLOCK))}
        self.device = torch.device(device)
        self.win = torch.from_numpy(grid.window).to(self.device)
        self._spare: list = []  # zeroed column blocks of written bands (`recycle`): reused, not allocated again
        self._spare_lock = threading.Lock()

    def bands_of_row(self, i: int) -> range:
        a, b = self.grid.crop_rows(i)
        return range(self.layout.band_of(a), self.layout.band_of(b - 1) + 1) if b > a else range(0)

    def last_row(self, b: int) -> int:
        rows = self.grid.rows_touching(*self.layout.band_rows(b))
        return rows[-1] if len(rows) else -1

    @torch.inference_mode()  # no autograd bookkeeping: less overhead per operation
    def add(self, i: int, j: int, pred) -> None:
        """Add tile ``(i, j)``'s ``(K, S, S)`` prediction (numpy or torch) to every unwritten band its crop
        overlaps."""
        self.add_weighted(i, j, as_tensor(pred, self.device) * self.win)

    @torch.inference_mode()
    def add_batch(self, tiles, probs) -> None:
        """`add` for a batch ``probs (B, K, S, S)`` in row-major order (tile by tile: small temporaries)."""
        probs = as_tensor(probs, self.device)
        for t, p in zip(tiles, probs):  # p * w into this thread's scratch tensor, reused from tile to tile
            self.add_weighted(*t, torch.mul(p, self.win, out=_scratch(p.shape, self.device)))

    def add_weighted(self, i: int, j: int, pw) -> None:
        """`add` of ``pw = pred * window`` (torch, on ``device``)."""
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
                    blocks[bi] = self._zero_block(rb - ra)
                acc, wsum = blocks[bi]
                ca, cb = max(xa, bi * BLOCK), min(xb, (bi + 1) * BLOCK)
                acc[:, ya - ra : yb - ra, ca - bi * BLOCK : cb - bi * BLOCK] += pw[:, ya - oy : yb - oy, ca - ox : cb - ox]
                wsum[ya - ra : yb - ra, ca - bi * BLOCK : cb - bi * BLOCK] += self.win[ya - oy : yb - oy, ca - ox : cb - ox]

    def _zero_block(self, rows: int) -> tuple:
        """A zero ``(acc (K, rows, BLOCK), wsum (rows, BLOCK))`` column block, recycled when one is spare."""
        with self._spare_lock:
            for n, (a, _) in enumerate(self._spare):
                if a.shape[1] == rows:
                    return self._spare.pop(n)
        return (torch.zeros((self.k, rows, BLOCK), dtype=torch.float32, device=self.device),
                torch.zeros((rows, BLOCK), dtype=torch.float32, device=self.device))

    @torch.inference_mode()
    def recycle(self, blocks: dict | None, keep: int = 8) -> None:
        """Hand back a written band's column blocks (`pop_blocks`, no longer read by anyone): they are zeroed
        here (e.g. in a writer thread) and reused for later bands, at most ``keep`` of them. A fresh block costs
        as much again in page faults as zeroing one that is already mapped."""
        for a, s in (blocks or {}).values():
            with self._spare_lock:
                if len(self._spare) >= keep:
                    return
            a.zero_()
            s.zero_()
            with self._spare_lock:
                self._spare.append((a, s))

    def pop(self, b: int):
        """`assemble` band ``b`` (None when no tile touched it) and forget it."""
        self.written.add(b)
        blocks = self.open.pop(b, None)
        return self.assemble(blocks) if blocks else None

    def pop_blocks(self, b: int) -> dict | None:
        """Band ``b``'s column blocks ``{index: (acc, wsum)}`` (None when no tile touched it), forgotten here."""
        self.written.add(b)
        return self.open.pop(b, None)

    def assemble(self, blocks: dict) -> list:
        return self.assemble_blocks(blocks, self.grid.shape[1])

    @staticmethod
    @torch.inference_mode()
    def assemble_blocks(blocks: dict, w: int) -> list:
        """Column blocks -> ``[acc (K, rows, hi - lo), wsum (rows, hi - lo), lo, hi]`` (torch): region columns
        ``[lo, hi)`` from the first to the last touched block (untouched blocks between them are 0)."""
        first, last = min(blocks), max(blocks)
        lo, hi = first * BLOCK, min(w, (last + 1) * BLOCK)
        if first == last:  # one block: a view, no copy
            a, s = blocks[first]
            return [a[:, :, : hi - lo], s[:, : hi - lo], lo, hi]
        k, rows = next(iter(blocks.values()))[0].shape[:2]
        dev = next(iter(blocks.values()))[0].device
        acc = torch.zeros((k, rows, hi - lo), dtype=torch.float32, device=dev)
        wsum = torch.zeros((rows, hi - lo), dtype=torch.float32, device=dev)
        for bi, (a, s) in blocks.items():
            c0, c1 = bi * BLOCK - lo, min(hi, (bi + 1) * BLOCK) - lo
            acc[:, :, c0:c1], wsum[:, c0:c1] = a[:, :, : c1 - c0], s[:, : c1 - c0]
        return [acc, wsum, lo, hi]

    @torch.inference_mode()
    def restore(self, b: int, band) -> None:
        """Put an assembled band (`assemble`, e.g. saved by a cancelled run; numpy or torch) back as column
        blocks."""
        acc, wsum, lo, hi = band
        acc, wsum = as_tensor(acc, self.device), as_tensor(wsum, self.device)
        blocks = self.open.setdefault(b, {})
        for bi in range(lo // BLOCK, (hi - 1) // BLOCK + 1):
            a = torch.zeros((acc.shape[0], acc.shape[1], BLOCK), dtype=torch.float32, device=self.device)
            s = torch.zeros((acc.shape[1], BLOCK), dtype=torch.float32, device=self.device)
            c0, c1 = bi * BLOCK - lo, min(hi, (bi + 1) * BLOCK) - lo
            a[:, :, : c1 - c0], s[:, : c1 - c0] = acc[:, :, c0:c1], wsum[:, c0:c1]
            blocks[bi] = (a, s)


def as_tensor(a, device) -> torch.Tensor:
    """numpy or torch -> float32 torch tensor on ``device`` (no copy when it already is one)."""
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=device, dtype=torch.float32)


def band_to_host(band) -> list | None:
    """An assembled band with numpy arrays (what `OutputStore.save_band` keeps)."""
    if band is None:
        return None
    acc, wsum, lo, hi = band
    return [to_numpy(acc), to_numpy(wsum), lo, hi]


def to_numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


@torch.inference_mode()
def tile_scores(grid, tiles, probs) -> np.ndarray:
    """``(B, K + 1)`` float32: each tile's mean probability per class and mean entropy (nats) over its owned
    square, from its own prediction ``probs (B, K, S, S)`` (numpy or torch; computed where it is). Tile by
    tile, on views of the batch: a tile's scores are the same bits whichever batch it came in (a reduction
    over several tiles at once rounds differently with their number), and nothing is gathered or copied. The
    entropy mean is taken on every second pixel of each axis."""
    p = probs if isinstance(probs, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(probs))
    h = grid.overlap // 2
    out = torch.empty((len(tiles), p.shape[1] + 1), dtype=torch.float32, device=p.device)
    for b, (i, j) in enumerate(tiles):
        a0, a1, b0, b1 = grid.owned(i, j)
        own = p[b, :, h : h + a1 - a0, h : h + b1 - b0].float()
        torch.mean(own, dim=(1, 2), out=out[b, :-1])
        sub = own[:, ::2, ::2]  # -p log p (torch.special.entr is 2x slower here: not vectorised on CPU)
        ent = torch.clamp(sub, 1e-12, 1.0, out=_scratch(sub.shape, p.device))
        out[b, -1] = -ent.log_().mul_(sub).sum(dim=0).mean()
    return to_numpy(out)


_local = threading.local()


def _scratch(shape, device) -> torch.Tensor:
    """A float32 scratch tensor of ``shape`` for this thread, reused between calls (a fresh multi-MB
    temporary costs as much again in page faults as filling it): `tile_scores`' clamp and `add_batch`'s
    ``p * w``, each used up before the next call."""
    n = int(np.prod(shape))
    buf = getattr(_local, "buf", None)
    if buf is None or buf.numel() < n or buf.device != torch.device(device):
        buf = _local.buf = torch.empty(max(n, 1), dtype=torch.float32, device=device)
    return buf[:n].view(shape)
