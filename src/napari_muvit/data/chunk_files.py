"""`ChunkFiles`: read and write the chunk files of a local zarr v3 array directly.

Writing: level-0 output chunks are one tile's owned square (48^2 px for 64 px tiles), so a run writes
thousands of small chunks; zarr-python's asynchronous write path costs more CPU per chunk than encoding and
writing it. Reading: every zarr-python read goes through its one event-loop thread, so slide chunks read by
several threads are decoded one after another (2 threads read 512^2 RGB chunks no faster than one, at 30 %
more CPU), while a file read and a zstd or blosc decode release the interpreter lock.

For arrays in the simple layout (zarr v3, regular chunks, default ``c/`` chunk keys, ``bytes`` codec
optionally followed by ``zstd`` (or, for reading, ``blosc``), on a local folder) each chunk is encoded
exactly as the zarr v3 spec stores it and written atomically (temporary file, then rename), and chunks are
read by decoding their files. Anything else (sharding, other codecs, zarr v2, remote stores) returns
``None`` from `ChunkFiles.for_array`, and callers go through zarr.
"""

from __future__ import annotations

import os
import threading
from itertools import product
from pathlib import Path

import numpy as np


class ChunkFiles:
    """Chunk-aligned writes and any-window reads of one array (see module docstring for when it applies)."""

    def __init__(self, folder: Path, shape, chunks, dtype, fill_value, key, compressor, write_empty: bool):
        self.folder, self.shape, self.chunks = folder, tuple(shape), tuple(chunks)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.fill_value = fill_value
        self._key = key
        self._compressor = compressor
        self._write_empty = write_empty
        self._zero_fill = fill_value == 0  # "any value differs from the fill" is then "any value is non-zero"
        self._tag = str(os.getpid())
        self._made: set = set()  # chunk folders known to exist

    @classmethod
    def for_array(cls, arr, reading: bool = False) -> ChunkFiles | None:
        """The direct chunk files of ``arr`` when it has the simple layout (module docstring), else None.
        ``reading``: the instance is only read from, so a ``blosc`` codec is accepted too."""
        try:
            import zarr
            from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec
            from zarr.core.chunk_grids import RegularChunkGrid
            from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
            from zarr.storage import LocalStore
        except ImportError:  # pragma: no cover - other zarr versions: write through zarr
            return None
        meta = arr.metadata
        if getattr(meta, "zarr_format", None) != 3 or not isinstance(arr.store, LocalStore):
            return None
        if not isinstance(meta.chunk_grid, RegularChunkGrid) or not isinstance(meta.chunk_key_encoding,
                                                                                DefaultChunkKeyEncoding):
            return None
        codecs = tuple(meta.codecs)
        if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
            return None
        if codecs[0].endian is not None and codecs[0].endian.value != "little":
            return None
        compressor = None
        if len(codecs) == 2:
            if isinstance(codecs[1], ZstdCodec):
                from numcodecs import Zstd

                compressor = Zstd(level=codecs[1].level, checksum=codecs[1].checksum)
            elif reading and isinstance(codecs[1], BloscCodec):
                from numcodecs import Blosc

                compressor = Blosc()  # a blosc frame says how it was compressed; any instance decodes it
            else:
                return None
        folder = Path(arr.store.root) / arr.path
        return cls(folder, arr.shape, meta.chunk_grid.chunk_shape, arr.dtype, meta.fill_value,
                   meta.chunk_key_encoding.encode_chunk_key, compressor,
                   bool(zarr.config.get("array.write_empty_chunks")))

    def covers(self, start, values_shape) -> bool:
        """True when the block at ``start`` is made of whole chunks (edge chunks may end at the array edge)."""
        if len(start) != len(self.shape) or len(values_shape) != len(self.shape):
            return False
        for s, n, c, size in zip(start, values_shape, self.chunks, self.shape):
            if s % c or (n % c and s + n != size) or s + n > size:
                return False
        return True

    def write(self, start, values: np.ndarray) -> None:
        """Write ``values`` at ``start`` (chunk-aligned, see `covers`): one file per chunk."""
        spans = [range(s // c, -(-(s + n) // c)) for s, n, c in zip(start, values.shape, self.chunks)]
        for idx in product(*spans):
            src = tuple(slice(k * c - s, min((k + 1) * c - s, n)) for k, c, s, n in
                        zip(idx, self.chunks, start, values.shape))
            block = values[src]
            if block.shape != self.chunks:  # edge chunk: zarr stores it at full size, padded with the fill
                full = np.full(self.chunks, self.fill_value, dtype=self.dtype)
                full[tuple(slice(0, n) for n in block.shape)] = block
                block = full
            target = self.folder / self._key(idx)
            if not self._write_empty and not (block.any() if self._zero_fill else np.any(block != self.fill_value)):
                target.unlink(missing_ok=True)  # as zarr does: an all-fill chunk is not stored
                continue
            data = memoryview(np.ascontiguousarray(block, dtype=self.dtype)).cast("B")  # the bytes, not a copy
            if self._compressor is not None:
                data = self._compressor.encode(data)
            if target.parent not in self._made:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(target.parent)
            tmp = target.with_name(f".{target.name}.{threading.get_ident()}.{self._tag}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)

    def read_chunk(self, idx) -> np.ndarray | None:
        """Chunk ``idx`` decoded, cut to the array's bounds at its edges; None when its file does not exist.
        A file that does not decode to one chunk raises (``ValueError`` or the codec's error)."""
        try:
            data = (self.folder / self._key(tuple(int(k) for k in idx))).read_bytes()
        except FileNotFoundError:
            return None
        if self._compressor is not None:
            data = self._compressor.decode(data)
        n = int(np.prod(self.chunks)) * self.dtype.itemsize
        if len(data) != n:
            raise ValueError(f"it decodes to {len(data)} bytes where a chunk has {n}")
        block = np.frombuffer(data, dtype=self.dtype).reshape(self.chunks)
        inside = tuple(slice(0, min(c, size - k * c)) for k, c, size in zip(idx, self.chunks, self.shape))
        return block[inside]

    def read(self, start, shape) -> np.ndarray:
        """The window ``[start, start + shape)`` (inside the array); chunks never written read as the fill."""
        out = np.empty(tuple(shape), dtype=self.dtype)
        spans = [range(s // c, -(-(s + n) // c)) for s, n, c in zip(start, shape, self.chunks)]
        for idx in product(*spans):
            src, dst = [], []
            for k, c, s, n in zip(idx, self.chunks, start, shape):
                lo, hi = max(s, k * c), min(s + n, (k + 1) * c)
                src.append(slice(lo - k * c, hi - k * c))
                dst.append(slice(lo - s, hi - s))
            block = self.read_chunk(idx)
            out[tuple(dst)] = self.fill_value if block is None else block[tuple(src)]
        return out
