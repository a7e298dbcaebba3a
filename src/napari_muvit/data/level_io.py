"""Raw level arrays: the `Level` record, axis layouts, zero-padded windows and chunk presence.

What `Pyramid` needs to read any stored array (zarr, tifffile, numpy, dask) window by window, kept apart from
the pyramid's world-coordinate logic (`data/pyramid.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SPATIAL = "zyx"


@dataclass
class Level:
    """One pyramid level.

    raw: array-like with numpy slicing (zarr.Array, numpy, dask), axes given by ``layout``
        (letters from ``t c z y x``; ``c`` = channels or RGB samples; every ``t`` axis, a time axis or a
        singleton axis squeezed away such as ``z = 1`` of a 5-D ``t,c,z,y,x`` image, is read at index 0).
    factor: downsample factor per spatial axis relative to level 0 (ints).
    source: index of the stored level a virtual level is averaged from (None when stored).
    """

    raw: Any
    layout: str
    factor: tuple[int, ...]
    source: int | None = None


def spatial_axes(layout: str) -> str:
    return "".join(a for a in layout if a in SPATIAL)


def at_t0(layout: str) -> tuple:
    """Index selecting position 0 of every ``t`` axis of an array in ``layout`` (other axes whole)."""
    return tuple(0 if a == "t" else slice(None) for a in layout)


def to_channels_first(block: np.ndarray, layout: str) -> np.ndarray:
    """Reorder an array read in ``layout`` (without ``t``) to ``(C, *spatial)``."""
    layout = layout.replace("t", "")
    if "c" not in layout:
        return block[None]
    return np.moveaxis(block, layout.index("c"), 0)


def block_mean(img: np.ndarray, ratio: Sequence[int]) -> np.ndarray:
    """Area-average ``img (C, *S)`` by integer ``ratio`` per spatial axis (shapes must divide)."""
    if all(r == 1 for r in ratio):
        return img
    shape = [img.shape[0]]
    for n, r in zip(img.shape[1:], ratio):
        shape += [n // r, r]
    return img.reshape(shape).mean(axis=tuple(range(2, 2 + 2 * len(ratio), 2)), dtype=np.float32)


def padded_window(n_channels: int, shape, start: np.ndarray, size: np.ndarray, read, dtype=np.float32):
    """Window ``(C, *size)`` of ``dtype`` (float32 by default) at pixel ``start`` of a ``(C, *shape)`` source, zero
    outside; plus validity.

    ``read(lo, hi)`` returns the source's ``(C, *(hi - lo))`` block for the in-bounds part (not called when empty).
    """
    shape = np.asarray(shape)
    lo = np.clip(start, 0, shape)
    hi = np.clip(start + size, 0, shape)
    out = np.zeros((n_channels, *size.tolist()), dtype=dtype)
    valid = np.zeros(tuple(size.tolist()), dtype=bool)
    if np.all(hi > lo):
        dst = tuple(slice(a, b) for a, b in zip((lo - start).tolist(), (hi - start).tolist()))
        out[(slice(None),) + dst] = read(lo.tolist(), hi.tolist())
        valid[dst] = True
    return out, valid


def slice_padded(arr: np.ndarray, start: np.ndarray, size: np.ndarray):
    """Window ``(C, *size)`` of an in-memory ``(C, *S)`` array, zero outside; plus validity mask."""
    return padded_window(
        arr.shape[0], arr.shape[1:], start, size,
        lambda lo, hi: arr[(slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))],
    )


def chunk_missing(raw, idx: tuple[int, ...]) -> bool:
    """Whether chunk ``idx`` of a zarr array is absent from its store (False for anything else)."""
    try:
        import zarr
        from zarr.core.sync import sync

        if not isinstance(raw, zarr.Array):
            return False
        sp = raw.store_path
        if not type(sp.store).__module__.startswith("zarr."):  # e.g. tifffile's store: no missing-chunk notion
            return False
        shards = getattr(raw, "shards", None)
        if shards:  # ``chunks`` are the inner chunks; the store holds whole shards
            idx = tuple(int(k) * int(c) // int(s) for k, c, s in zip(idx, raw.chunks, shards))
        key = raw.metadata.encode_chunk_key(tuple(int(k) for k in idx))
        return not sync(sp.store.exists(f"{sp.path}/{key}" if sp.path else key))
    except Exception:  # an exotic store that cannot answer: read as usual
        return False


def chunks_of(raw) -> Any:
    chunks = getattr(raw, "chunks", None)
    if isinstance(chunks, tuple) and all(isinstance(c, int) for c in chunks):
        return chunks
    return "auto"
