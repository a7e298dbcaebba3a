"""Complete bands -> stored output values and labels, written as whole chunks (`engine/stitch.py` sums them).

Output values: ``p = acc / wsum`` where the pixel's owning tile (the tile whose owned square holds it) was
predicted, else nothing. At ``N > 1`` an output pixel is the mean of its predicted level-1 pixels. Labels
are ``argmax + 1`` (0 = not predicted). Probabilities are stored as ``uint8`` (``v = floor(255 p + 0.5)``,
read as ``p = v / 255``), ``float16``/``float32``, or not at all (``none``: the image holds the labels as one channel).

The conversion runs where the band sums are (the model's device): on a GPU only the stored values and labels
cross back. A band is converted in column slabs, straight from the stitcher's column blocks at output level 1.
"""

from __future__ import annotations

import numpy as np
import torch

from .output_layout import OutputLayout
from .stitch import BLOCK, BandStitcher, as_tensor, to_numpy


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


SLAB = 2048  # output columns converted at a time: a slab's float temporaries stay small (cache-sized)
NUMPY_ON_CPU = True  # on a CPU, comparisons and float -> uint8 casts go through numpy (2-3x faster, same values)


def _greater(a, b, out):
    """``out = a > b`` (torch, ``out`` bool); through numpy views on a CPU (`NUMPY_ON_CPU`)."""
    if NUMPY_ON_CPU and a.device.type == "cpu":
        np.greater(a.numpy(), b.numpy(), out=out.numpy())
        return out
    return torch.gt(a, b, out=out)


def _cast_into(out, v):
    """``out[...] = v`` converted to ``out``'s dtype (C conversion: a float -> uint8 cast truncates); through
    numpy views on a CPU for uint8 (`NUMPY_ON_CPU`)."""
    if NUMPY_ON_CPU and out.device.type == "cpu" and out.dtype == torch.uint8:
        np.copyto(out.numpy(), v.numpy(), casting="unsafe")
        return out
    return out.copy_(v)


@torch.inference_mode()
def band_output(layout: OutputLayout, b: int, acc, wsum, owner=None, lo: int = 0):
    """Blended band (region columns ``[lo, lo + acc.shape[-1])``) -> ``(r0, c0, values (C, h, w), labels (h, w))``
    in level-0 output px (see module). ``acc``/``wsum`` numpy or torch; the work runs where they are and only
    ``values`` (the stored dtype) and ``labels`` come back as numpy."""
    acc = as_tensor(acc, acc.device if isinstance(acc, torch.Tensor) else "cpu")
    dev = acc.device
    wsum = as_tensor(wsum, dev)
    y0, _, x0, _ = layout.region
    x0, x1 = x0 + lo, x0 + lo + acc.shape[-1]
    ra, rb = layout.band_rows(b)
    n = layout.level
    pred = wsum > 0
    if owner is not None:
        pred &= torch.from_numpy(np.ascontiguousarray(owner)).to(dev)
    r0, c0 = (y0 + ra) // n, x0 // n
    if n == 1:
        return (r0, c0) + _convert_slabs(layout, acc, wsum, pred, divide=False)
    # mean of the predicted level-1 pixels of each world-aligned n x n block
    inv = torch.reciprocal(wsum + (~pred).to(torch.float32)).mul_(pred)
    probs = acc * inv  # 0 where nothing was predicted
    r1, c1 = -(-(y0 + rb) // n), -(-x1 // n)
    dy, dx = y0 + ra - r0 * n, x0 - c0 * n
    k = probs.shape[0]
    big = torch.zeros((k, (r1 - r0) * n, (c1 - c0) * n), dtype=torch.float32, device=dev)
    cnt = torch.zeros(big.shape[1:], dtype=torch.float32, device=dev)
    big[:, dy : dy + probs.shape[1], dx : dx + probs.shape[2]] = probs
    cnt[dy : dy + probs.shape[1], dx : dx + probs.shape[2]] = pred.to(torch.float32)
    sums = big.reshape(k, r1 - r0, n, c1 - c0, n).sum(dim=(2, 4))
    count = cnt.reshape(r1 - r0, n, c1 - c0, n).sum(dim=(1, 3))
    return (r0, c0) + _convert_slabs(layout, sums, count, count > 0, divide=True)


def _convert_slabs(layout: OutputLayout, total, weight, pred, divide: bool, pieces=None):
    """``p = total * (1 / weight)`` (``divide``: ``total / weight``) where ``pred``, else 0 -> stored values and
    labels (numpy), column slab by column slab. Each element sees the same operations as on the whole band.

    ``pieces`` (instead of ``total``/``weight``): ``[(c0, total_piece, weight_piece) or (c0, None, None)]``
    covering the band's columns left to right (a stitcher's column blocks, ``None`` = untouched, read as 0),
    so a band is converted without first being copied into one array."""
    k, h, w = total.shape if pieces is None else (next(p[1] for p in pieces if p[1] is not None).shape[0],) + pred.shape
    dev = pred.device
    wide = k >= 255  # torch has no uint16 arithmetic: labels of >= 255 classes are counted in int32
    ldtype = torch.int32 if wide else torch.uint8
    labels = torch.empty((h, w), dtype=ldtype, device=dev)
    vdtype = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32}
    none = layout.prob_dtype == "none"
    values = labels[None] if none else torch.empty((k, h, w), dtype=vdtype[layout.prob_dtype], device=dev)
    if pieces is None:
        pieces = [(0, total, weight)]
    ends = [c for c, _, _ in pieces[1:]] + [w]
    for (c0, tot, wei), c1 in zip(pieces, ends):
        if tot is None:  # untouched columns: nothing predicted (labels 0, probabilities 0)
            values[:, :, c0:c1] = 0
            labels[:, c0:c1] = 0
            continue
        for a in range(c0, c1, SLAB):
            sl, rel = slice(a, min(c1, a + SLAB)), slice(a - c0, min(c1, a + SLAB) - c0)
            # masks as 0/1 bytes (a bool tensor's own bytes): same-dtype arithmetic is vectorised, while masked
            # fills and bool operands take a slow elementwise path on a CPU
            on = pred[:, sl].view(torch.uint8)
            everywhere = bool(on.all())  # the usual slab: the masks below would multiply by 1 and add 0
            if everywhere:
                safe = wei[:, rel]
                probs = tot[:, :, rel] / safe if divide else tot[:, :, rel] * torch.reciprocal(safe)
            else:
                keep = on.to(torch.float32)
                safe = wei[:, rel] + (1.0 - keep)  # 1 where nothing is predicted: no division by zero
                if divide:
                    probs = (tot[:, :, rel] / safe).mul_(keep)
                else:
                    probs = tot[:, :, rel] * torch.reciprocal(safe).mul_(keep)
            lab = labels[:, sl]
            argmax_channels(probs, out=lab, base=1)
            if not everywhere:
                lab.mul_(on if ldtype == torch.uint8 else on.to(ldtype))  # 0 where nothing was predicted
            if not none:
                encode_probs(probs, layout.prob_dtype, out=values[:, :, sl])
    values, labels = to_numpy(values), to_numpy(labels)
    if wide:
        labels = labels.astype(np.uint16)
        values = values.astype(np.uint16) if values.dtype == np.int32 else values
    return values, labels


@torch.inference_mode()
def finish_blocks(store, grid, layout: OutputLayout, b: int, blocks, state, background_code) -> None:
    """`finish_band` from a stitcher's column blocks (`BandStitcher.pop_blocks`): at output level 1 the
    blocks are converted where they lie (no band-wide copy), else assembled first. Same bytes either way."""
    if not blocks:
        return
    w = grid.shape[1]
    first, last = min(blocks), max(blocks)
    lo, hi = first * BLOCK, min(w, (last + 1) * BLOCK)
    if layout.level != 1:
        return finish_band(store, grid, layout, b, BandStitcher.assemble_blocks(blocks, w), state, background_code)
    any_block = next(iter(blocks.values()))
    dev = any_block[0].device
    pieces, pred_parts = [], []
    for bi in range(first, last + 1):
        c0, c1 = bi * BLOCK - lo, min(hi, (bi + 1) * BLOCK) - lo
        if bi in blocks:
            acc, wsum = blocks[bi]
            pieces.append((c0, acc[:, :, : c1 - c0], wsum[:, : c1 - c0]))
            pred_parts.append(wsum[:, : c1 - c0] > 0)
        else:
            pieces.append((c0, None, None))
            pred_parts.append(torch.zeros((any_block[1].shape[0], c1 - c0), dtype=torch.bool, device=dev))
    pred = torch.cat(pred_parts, dim=1)
    owner = owner_foreground(grid, layout, b, state, background_code, lo, hi)
    if owner is not None:
        pred &= torch.from_numpy(np.ascontiguousarray(owner)).to(dev)
    y0, _, x0, _ = layout.region
    ra, _ = layout.band_rows(b)
    values, labels = _convert_slabs(layout, None, None, pred, divide=False, pieces=pieces)
    write_band(store, layout, b, y0 + ra, x0 + lo, values, labels)


def argmax_channels(p, dtype=None, out=None, base: int = 0):
    """``argmax`` over axis 0 of ``(K, h, w)`` (first maximum wins), plus ``base``; a few passes per channel.
    numpy (result dtype ``dtype``, default uint8) or torch (default ``torch.uint8``, computed where ``p`` is,
    into ``out`` when given, e.g. a view of a band's labels)."""
    if isinstance(p, torch.Tensor):  # "k where better than every earlier channel, else keep"
        idx = torch.empty(p.shape[1:], dtype=dtype or torch.uint8, device=p.device) if out is None else out
        idx.fill_(base)
        if p.shape[0] == 1:
            return idx
        better = torch.empty(p.shape[1:], dtype=torch.bool, device=p.device)
        step = torch.empty_like(idx)
        best = p[0]
        for k in range(1, p.shape[0]):  # channel indices grow, so "k where better" is max(idx, k * better)
            _greater(p[k], best, better)
            torch.mul(better.view(torch.uint8) if idx.dtype == torch.uint8 else better.to(idx.dtype), k + base,
                      out=step)
            torch.maximum(idx, step, out=idx)
            if k + 1 < p.shape[0]:
                best = torch.maximum(best, p[k]) if k == 1 else torch.maximum(best, p[k], out=best)
        return idx
    best = p[0].copy()
    idx = np.full(p.shape[1:], base, dtype or np.uint8)
    for k in range(1, p.shape[0]):
        better = p[k] > best
        idx[better] = k + base
        np.maximum(best, p[k], out=best)
    return idx


def encode_probs(probs, dtype: str, labels=None, out=None):
    """Float probabilities in [0, 1] -> stored values (``uint8``: ``floor(255 p + 0.5)``; ``none``: the
    labels). numpy or torch (computed where ``probs`` is; torch with ``out``: written there, ``probs`` used as
    scratch space)."""
    if isinstance(probs, torch.Tensor):
        if dtype == "uint8":  # p in [0, 1]: floor(255 p + 0.5) is the nearest of 0..255
            v = probs.mul_(255.0) if out is not None else probs * 255.0
            v += 0.5
            if out is not None:  # 255 p + 0.5 lies in [0.5, 256) (a blend is at most a few ulp above 1): the cast floors it
                return _cast_into(out, v)
            return v.clamp_(0, 255.5).to(torch.uint8)
        if dtype == "none":
            v = labels[None].to(torch.uint8 if labels.dtype == torch.uint8 else labels.dtype)
        else:
            v = probs.to(getattr(torch, dtype))
        return v if out is None else out.copy_(v)
    if dtype == "uint8":
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
        if (lo, hi, r0, values.shape[1]) == (C0, C1, R0, R1 - R0):  # the output fills the chunk: no copy
            store.write_chunk((R0, C0), values[:, :, lo - c0 : hi - c0], labels[:, lo - c0 : hi - c0])
            n += 1
            continue
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
