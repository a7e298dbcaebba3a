"""`TiffTiles`: the tiles of one level of a tiled TIFF (OME-TIFF, SVS, NDPI, ...) read and decoded directly.

tifffile exposes a TIFF level as a zarr store, and zarr-python runs every read as a coroutine on its one
event-loop thread: reader threads then decode one tile after another, and for cheap codecs the machinery
costs more than the decode (512^2 RGB zlib tiles: 0.65-0.73 ms per tile through zarr, 0.17-0.25 ms read and
decoded here). Here a tile's bytes are read under the file handle's own lock (the one tifffile's zarr store
takes, so both can read the same file) and decoded outside it by tifffile's codec for the page, which
releases the interpreter lock in imagecodecs.

Only the plain layout is read this way: a level of one tiled page, samples interleaved (``Y, X`` or
``Y, X, S``), whose zarr chunks are its tiles. Anything else returns None from `TiffTiles.for_level` and is
read through zarr as before.
"""

from __future__ import annotations

import numpy as np


class TiffTiles:
    """Tile reads of one tiled TIFF page whose zarr view (``raw``) is chunked by tile."""

    def __init__(self, page, shape, chunks, dtype):
        self.page = page
        self.shape, self.chunks, self.dtype = tuple(shape), tuple(chunks), np.dtype(dtype)
        self.fill_value = 0
        self._across = -(-self.shape[1] // self.chunks[1])
        self._fh = page.parent.filehandle
        self._fh.set_lock(True)  # the reentrant lock tifffile's zarr store uses for the same file handle
        self._decode = page.decode
        self._tables = {"jpegtables": page.jpegtables, "jpegheader": getattr(page, "jpegheader", None)}

    @classmethod
    def for_level(cls, level, raw) -> TiffTiles | None:
        """The direct tile reader of a tifffile series level (its zarr view ``raw``), or None."""
        try:
            pages = list(level.pages)
            if len(pages) != 1 or pages[0] is None:
                return None
            page = pages[0]
            if not page.is_tiled or page.imagedepth != 1 or page.tiledepth != 1:
                return None
            spp = int(page.samplesperpixel)
            if spp > 1 and page.planarconfig != 1:  # 1 = CONTIG: samples interleaved in each tile
                return None
            tile = (int(page.tilelength), int(page.tilewidth))
            want_shape = (int(page.imagelength), int(page.imagewidth)) + ((spp,) if spp > 1 else ())
            want_chunks = tile + ((spp,) if spp > 1 else ())
            if tuple(raw.shape) != want_shape or tuple(raw.chunks) != want_chunks:
                return None
            if np.dtype(raw.dtype) != np.dtype(page.dtype):
                return None
        except Exception:  # noqa: BLE001 - an unusual file: zarr reads it
            return None
        return cls(page, want_shape, want_chunks, raw.dtype)

    def read_chunk(self, idx) -> np.ndarray:
        """Tile ``idx`` (zarr chunk index) decoded, cut to the level's bounds; an absent tile reads as zeros."""
        i, j = int(idx[0]), int(idx[1])
        k = i * self._across + j
        offset, count = int(self.page.dataoffsets[k]), int(self.page.databytecounts[k])
        rows, cols = min(self.chunks[0], self.shape[0] - i * self.chunks[0]), min(self.chunks[1], self.shape[1] - j * self.chunks[1])
        out_shape = (rows, cols) + self.chunks[2:]
        if not offset or not count:
            return np.zeros(out_shape, self.dtype)
        with self._fh.lock:
            self._fh.seek(offset)
            data = self._fh.read(count)
        segment, _, _ = self._decode(data, k, **self._tables)
        if segment is None:
            return np.zeros(out_shape, self.dtype)
        tile = np.asarray(segment).reshape(segment.shape[-3:-1] + self.chunks[2:])  # (depth 1,) th, tw, (s)
        return tile[:rows, :cols]
