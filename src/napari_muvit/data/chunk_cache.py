"""`ChunkCache`: a small, byte-bounded LRU of decoded source chunks, and chunk-wise window reads through it.

A compressed zarr/TIFF level decodes whole chunks even when a window needs a thin strip of one. Tile
windows of consecutive grid rows fall in the same source chunks (a 1024^2 chunk holds ~20 rows of 48 px
tiles), so keeping the last few decoded chunks saves decoding each chunk again for every row. The cache
is bounded in bytes (not by the slide): memory stays bounded whatever the slide size.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from itertools import product

import numpy as np

DEFAULT_CACHE_BYTES = 64 << 20  # 64 MiB: a grid row of 1024^2 uint8 chunks across a ~16k-px-wide region


class ChunkCache:
    """Thread-safe LRU ``key -> numpy array`` holding at most ``max_bytes`` of array data.

    ``max_bytes = 0`` disables caching. ``hits`` / ``misses`` count lookups (for tests and benchmarks).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's lock may be held by a thread that is gone
            self.__init__(self.max_bytes)

    def __len__(self) -> int:
        return len(self._items)

    # a copy sent to another process (pickle) starts empty: decoded chunks are not worth shipping
    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"])

    def get(self, key):
        self._check_fork()
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)
            return value

    def put(self, key, value: np.ndarray) -> None:
        """Keep ``value`` (if it fits the budget at all), evicting the least recently used entries."""
        size = int(value.nbytes)
        if size > self.max_bytes:
            return
        self._check_fork()
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= int(old.nbytes)
            self._items[key] = value
            self.nbytes += size
            while self.nbytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self.nbytes -= int(evicted.nbytes)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


def regular_chunks(raw) -> tuple[int, ...] | None:
    """Chunk shape of a chunked on-disk array (zarr, tifffile's zarr store), else None.

    numpy arrays (already in memory) and dask arrays (their own chunk graph) are not cached.
    """
    if isinstance(raw, np.ndarray) or type(raw).__module__.startswith("dask"):
        return None
    chunks = getattr(raw, "chunks", None)
    shape = getattr(raw, "shape", None)
    if not isinstance(chunks, tuple) or shape is None or len(chunks) != len(shape):
        return None
    if not all(isinstance(c, (int, np.integer)) and c > 0 for c in chunks):
        return None
    return tuple(int(c) for c in chunks)


def read_through_cache(raw, chunks: tuple[int, ...], ranges: list[tuple[int, int]], cache: ChunkCache,
                       tag, read_chunk=None) -> np.ndarray:
    """``raw[ranges]`` (every axis a half-open ``(start, stop)`` inside the array) assembled from whole chunks.

    Each overlapped chunk is read once (``raw[chunk]``, one decode) and kept in ``cache`` under
    ``(tag, chunk index)``; the result equals ``np.asarray(raw[slices])`` exactly (same dtype).
    ``read_chunk(slices, chunk_index)``, when given, reads one chunk instead of ``raw[slices]`` (the pyramid
    uses it to report missing and corrupt chunks).
    """
    shape = raw.shape
    out = np.empty(tuple(b - a for a, b in ranges), dtype=np.dtype(raw.dtype))
    spans = [range(a // c, -(-b // c)) for (a, b), c in zip(ranges, chunks)]
    for idx in product(*spans):
        key = (tag, idx)
        block = cache.get(key)
        if block is None:
            src = tuple(slice(k * c, min((k + 1) * c, n)) for k, c, n in zip(idx, chunks, shape))
            block = np.asarray(raw[src]) if read_chunk is None else np.asarray(read_chunk(src, idx))
            cache.put(key, block)
        # overlap of this chunk with the request, in chunk and in output coordinates
        src_sel, dst_sel = [], []
        for k, c, (a, b) in zip(idx, chunks, ranges):
            lo, hi = max(a, k * c), min(b, (k + 1) * c)
            src_sel.append(slice(lo - k * c, hi - k * c))
            dst_sel.append(slice(lo - a, hi - a))
        out[tuple(dst_sel)] = block[tuple(src_sel)]
    return out
