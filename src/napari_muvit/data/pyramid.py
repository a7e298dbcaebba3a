"""`Pyramid`: lazy multi-resolution image in world coordinates, and nested MuViT crops from it.

A pyramid is a list of *stored* levels (arrays that exist in a file or in memory, read window by
window straight from the underlying zarr/tifffile/numpy array) and, when the source has too few
levels, *virtual* levels computed lazily by area-averaging a stored level. Public levels are dask
arrays, channels-first ``(C, Y, X)`` or ``(C, Z, Y, X)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import product

import dask.array as da
import numpy as np

from .chunk_cache import DEFAULT_CACHE_BYTES, ChunkCache, read_through_cache, regular_chunks
from .geometry import nested_crop_boxes, validate_crop_size, validate_levels
from .level_io import (  # Level and SPATIAL keep their data.pyramid import path
    SPATIAL,  # noqa: F401
    Level,
    at_t0,
    block_mean,
    chunk_missing,
    chunks_of,
    padded_window,
    slice_padded,
    spatial_axes,
    to_channels_first,
)

log = logging.getLogger(__name__)

CACHE_STRIP_BYTES = 64 << 20  # float32 temporaries while averaging an in-memory source once


class Pyramid:
    """Lazy image pyramid in world coordinates (level-1 pixel units).

    Attributes: ``arrays`` (dask, channels-first), ``factors`` (per-level per-spatial-axis factors),
    ``level_factors`` (Y/X factor per level, float), ``shape`` (level-0 spatial shape), ``n_channels``,
    ``rgb``, ``dtype``, ``pixel_size`` (level-0 physical size per spatial axis, or None), ``unit``,
    ``name``, ``spatial_ndim``, ``channel_names``, ``chunk_cache`` (`ChunkCache` of decoded source chunks
    shared by every window read; set ``chunk_cache.max_bytes`` to change its budget, 0 disables it).

    ``translation``: physical position ``(y, x)`` (same unit as ``pixel_size``; level-1 pixels when the
    pixel size is unknown) of the *centre* of level-1 pixel ``(0, 0)``, i.e. the level-0 OME-Zarr
    ``translation`` of the spatial axes (combined with the multiscale-wide transformations);
    ``(0.0, 0.0)`` when the file has none. World coordinate ``w`` is at physical ``translation + w *
    pixel_size``; ``spatial_translation`` holds every spatial axis (``(z, y, x)`` for 3-D).

    Missing and corrupt source chunks (zarr): a chunk absent from the store reads as the array's fill
    value, as the Zarr spec allows; the first one is reported with a logged warning naming the array and chunk
    and every one is counted in ``missing_chunks`` (`missing_chunks_message` gives the count in one
    sentence). With ``strict = True`` a missing chunk raises ``ValueError`` instead. A chunk that cannot be
    decoded always raises ``ValueError`` naming the array and chunk.
    """

    def __init__(
        self,
        levels: list[Level],
        *,
        name: str = "image",
        pixel_size: tuple[float, ...] | None = None,
        unit: str | None = None,
        channel_names: list[str] | None = None,
        rgb: bool = False,
        translation: Sequence[float] | None = None,
        strict: bool = False,
    ):
        if not levels:
            raise ValueError("the pyramid has no levels; give at least one image array.")
        self._levels = levels
        self.name = name
        self.pixel_size = tuple(float(p) for p in pixel_size) if pixel_size is not None else None
        self.unit = unit
        self.rgb = bool(rgb)
        self.spatial_ndim = len(levels[0].factor)
        self.spatial_translation = (0.0,) * self.spatial_ndim
        if translation is not None:
            self.translation = translation
        self.strict = bool(strict)
        self.missing_chunks: set = set()
        self._checked_chunks: set = set()
        self._direct: dict = {}  # stored level -> its chunk reader (or None: read through zarr)
        self._cache: dict[tuple[int, ...], np.ndarray] = {}
        self.chunk_cache = ChunkCache(DEFAULT_CACHE_BYTES)
        self.metadata: dict = {}
        self.arrays: list[da.Array] = []
        for i in range(len(levels)):
            self.arrays.append(self._as_dask(i))
        self.n_channels = int(self.arrays[0].shape[0])
        self.shape = tuple(int(n) for n in self.arrays[0].shape[1:])
        self.dtype = np.dtype(self.arrays[0].dtype)
        self.channel_names = list(channel_names) if channel_names else [f"channel {i}" for i in range(self.n_channels)]
        if self.rgb:
            self.channel_names = ["red", "green", "blue", "alpha"][: self.n_channels]

    def __getstate__(self) -> dict:
        # a copy sent to another process (a dask worker) checks and counts its own chunks
        state = self.__dict__.copy()
        state["_checked_chunks"], state["missing_chunks"], state["_direct"] = set(), set(), {}
        return state

    # ---- descriptive properties -------------------------------------------------------------
    @property
    def translation(self) -> tuple[float, float]:
        """Physical ``(y, x)`` of the centre of level-1 pixel ``(0, 0)`` (see the class docstring)."""
        return tuple(self.spatial_translation[-2:])

    @translation.setter
    def translation(self, value: Sequence[float]) -> None:
        vals = [float(v) for v in value]
        if not all(np.isfinite(vals)) or len(vals) not in (2, self.spatial_ndim):
            raise ValueError(
                f"translation {tuple(value)!r} must be {self.spatial_ndim} finite numbers (one per spatial axis)."
            )
        self.spatial_translation = tuple([0.0] * (self.spatial_ndim - len(vals)) + vals)

    @property
    def factors(self) -> list[tuple[int, ...]]:
        return [lv.factor for lv in self._levels]

    @property
    def stored_levels(self) -> list[bool]:
        """Per level: True when it is stored in the source, False when averaged on the fly from a finer one."""
        return [lv.source is None for lv in self._levels]

    @property
    def level_factors(self) -> list[float]:
        return [float(lv.factor[-1]) for lv in self._levels]

    @property
    def downsamples_z(self) -> bool:
        return self.spatial_ndim == 3 and any(f[0] > 1 for f in self.factors)

    def level_shape(self, level_index: int) -> tuple[int, ...]:
        """Spatial shape of a level (pixels)."""
        return tuple(int(n) for n in self.arrays[level_index].shape[1:])

    def __repr__(self) -> str:
        return (
            f"Pyramid(name={self.name!r}, shape={self.shape}, channels={self.n_channels}, "
            f"factors={self.level_factors}, dtype={self.dtype})"
        )

    # ---- lazy dask levels -------------------------------------------------------------------
    def _as_dask(self, i: int) -> da.Array:
        lv = self._levels[i]
        if lv.source is None:
            # name=False: no hashing of in-memory data just to name the graph
            raw = lv.raw if isinstance(lv.raw, da.Array) else da.from_array(
                lv.raw, chunks=chunks_of(lv.raw), name=False)
            if "t" in lv.layout:
                raw = raw[at_t0(lv.layout)]
            layout = lv.layout.replace("t", "")
            arr = raw[None] if "c" not in layout else da.moveaxis(raw, layout.index("c"), 0)
            return arr
        # chain from the previous level: a mean of equal-sized block means is the block mean
        src = self.arrays[i - 1]
        ratio = [f // g for f, g in zip(lv.factor, self._levels[i - 1].factor)]
        trimmed = src[(slice(None),) + tuple(slice(0, (n // r) * r) for n, r in zip(src.shape[1:], ratio))]
        axes = {1 + k: r for k, r in enumerate(ratio)}
        return da.coarsen(np.mean, trimmed.astype(np.float32), axes, trim_excess=True)

    # ---- window reading ---------------------------------------------------------------------
    def _target_factor(self, level: int) -> tuple[int, ...]:
        if self.spatial_ndim == 3 and not self.downsamples_z:
            return (1, int(level), int(level))
        return (int(level),) * self.spatial_ndim

    def _stored_source_for(self, target: tuple[int, ...]) -> int:
        """Index of the stored level with the largest factor that divides ``target`` on every axis."""
        best = None
        for i, lv in enumerate(self._levels):
            if lv.source is not None:
                continue
            if all(t % f == 0 for t, f in zip(target, lv.factor)):
                if best is None or np.prod(lv.factor) > np.prod(self._levels[best].factor):
                    best = i
        if best is None:
            raise ValueError(
                f"no pyramid level can produce downsample factor {target}; available factors are "
                f"{self.factors} and a requested level must be a multiple of one of them."
            )
        return best

    def _read_stored(self, i: int, start: np.ndarray, size: np.ndarray, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Read ``(C, *size)`` float32 (``raw``: the stored dtype) from stored level ``i`` at pixel ``start``; zero
        outside."""
        layout = self._levels[i].layout

        def read(lo: list[int], hi: list[int]) -> np.ndarray:
            spatial = dict(zip(spatial_axes(layout), zip(lo, hi)))
            return to_channels_first(self._read_raw(i, spatial), layout)

        dtype = np.dtype(self._levels[i].raw.dtype) if raw else np.float32
        return padded_window(self.n_channels, self.level_shape(i), start, size, read, dtype)

    def _read_raw(self, i: int, spatial: dict) -> np.ndarray:
        """``raw[t=0, all channels, spatial ranges]`` of stored level ``i`` in its own layout (without ``t``).

        Chunked on-disk arrays go through `chunk_cache` (whole chunks decoded once and reused by the
        next windows); in-memory arrays, dask arrays and chunks too big for the cache are sliced directly.
        """
        lv = self._levels[i]
        chunks = regular_chunks(lv.raw)
        cache = self.chunk_cache
        if chunks is not None and cache.max_bytes > 0:
            chunk_bytes = int(np.prod(chunks)) * np.dtype(lv.raw.dtype).itemsize
            if chunk_bytes * 4 <= cache.max_bytes:  # several chunks must fit, or the cache only adds work
                ranges = [(0, 1) if a == "t" else (0, int(n)) if a == "c" else spatial[a]
                          for a, n in zip(lv.layout, lv.raw.shape)]
                block = read_through_cache(lv.raw, chunks, ranges, cache, i,
                                           read_chunk=lambda src, idx: self._read_chunk(i, src, idx))
                return block[at_t0(lv.layout)] if "t" in lv.layout else block
        key = tuple(
            0 if a == "t" else slice(None) if a == "c" else slice(*spatial[a]) for a in lv.layout
        )
        if chunks is not None:
            ranges = [(k, k + 1) if isinstance(k, int) else k.indices(n)[:2] for k, n in zip(key, lv.raw.shape)]
            for idx in product(*[range(a // c, -(-b // c)) for (a, b), c in zip(ranges, chunks)]):
                self._check_chunk(i, idx)
        return self._decode(i, key, None)

    # ---- missing and corrupt chunks ---------------------------------------------------------
    def _array_name(self, i: int) -> str:
        raw = self._levels[i].raw
        where = getattr(raw, "store_path", None)
        return f"{str(where)!r}" if where is not None else f"level {i}"

    def _check_chunk(self, i: int, idx: tuple[int, ...]) -> None:
        """Record (or, when ``strict``, refuse) a chunk of stored level ``i`` that is absent from its zarr store."""
        key = (i, idx)
        if key in self._checked_chunks:
            return
        self._checked_chunks.add(key)
        if chunk_missing(self._levels[i].raw, idx):
            self._note_missing(i, idx)

    def _note_missing(self, i: int, idx: tuple[int, ...]) -> None:
        """Count chunk ``idx`` of stored level ``i`` as absent and read as fill value, warning for the first
        one (strict: refuse it, every time it is read)."""
        key = (i, idx)
        where = f"chunk {idx} of array {self._array_name(i)}"
        if self.strict:
            raise ValueError(f"{where} is missing from the store; strict mode refuses to read it as fill value.")
        if key in self.missing_chunks:
            return
        self.missing_chunks.add(key)
        if len(self.missing_chunks) == 1:
            msg = (f"{where} is missing from the store and is read as the fill value (zeros); further missing "
                   "chunks are only counted.")
            log.warning(msg)

    def check_all_chunks(self) -> int:
        """Check every chunk of every stored zarr level up front (strict runs refuse before any output).

        Returns the number of chunks missing; with ``strict`` the first one raises ``ValueError``.
        """
        for i, lv in enumerate(self._levels):
            chunks = regular_chunks(lv.raw) if lv.source is None else None
            if chunks is None:
                continue
            ranges = [range(1) if a == "t" else range(-(-int(n) // int(c)))
                      for a, n, c in zip(lv.layout, lv.raw.shape, chunks)]
            for idx in product(*ranges):
                self._check_chunk(i, idx)
        return len(self.missing_chunks)

    def missing_chunks_message(self) -> str | None:
        """One sentence with the number of missing source chunks read so far as fill value, or None."""
        n = len(self.missing_chunks)
        if not n:
            return None
        return (f"{n} source chunk{'s' if n != 1 else ''} of {self.name!r} {'were' if n != 1 else 'was'} "
                "missing and read as fill value (zeros).")

    def _decode(self, i: int, key, idx) -> np.ndarray:
        try:
            return np.asarray(self._levels[i].raw[key])
        except MemoryError:
            raise
        except Exception as exc:
            raise self._damaged(i, f"chunk {idx}" if idx is not None else "a window", exc) from exc

    def _damaged(self, i: int, what: str, exc: Exception) -> ValueError:
        return ValueError(
            f"{what} of array {self._array_name(i)} could not be read ({type(exc).__name__}: {exc}); the file is "
            "damaged: copy or convert the slide again."
        )

    def add_chunk_readers(self, reader_for) -> int:
        """Read the chunks of stored levels with ``reader_for(raw)`` where it returns a reader (an object with
        ``read_chunk(idx)`` and ``fill_value``, e.g. `data.tiff_tiles.TiffTiles`); returns how many levels."""
        n = 0
        for i, lv in enumerate(self._levels):
            reader = reader_for(lv.raw) if lv.source is None else None
            if reader is not None:
                self._direct[i] = reader
                n += 1
        return n

    def _chunk_reader(self, i: int):
        """What reads stored level ``i``'s chunks without zarr: a reader given by `add_chunk_readers`, the
        chunk files of a zarr v3 array in the simple layout (`data.chunk_files`), else None (through zarr)."""
        if i not in self._direct:
            raw = self._levels[i].raw
            direct = None
            if type(raw).__module__.startswith("zarr"):
                from .chunk_files import ChunkFiles

                direct = ChunkFiles.for_array(raw, reading=True)
            self._direct[i] = direct
        return self._direct[i]

    def _read_chunk(self, i: int, src: tuple, idx: tuple[int, ...]) -> np.ndarray:
        direct = self._chunk_reader(i)
        if direct is None:  # through zarr (its one event-loop thread)
            self._check_chunk(i, idx)
            return self._decode(i, src, idx)
        try:  # the file read and the decode release the interpreter lock: reader threads run side by side
            block = direct.read_chunk(idx)
        except MemoryError:
            raise
        except Exception as exc:
            raise self._damaged(i, f"chunk {tuple(idx)}", exc) from exc
        if block is None:
            self._note_missing(i, idx)
            return np.full(tuple(sl.stop - sl.start for sl in src), direct.fill_value, dtype=self._levels[i].raw.dtype)
        return block

    def _read(self, target: tuple[int, ...], start: np.ndarray, size: np.ndarray, raw: bool = False):
        i = self._stored_source_for(target)
        ratio = np.asarray(target) // np.asarray(self._levels[i].factor)
        if np.all(ratio == 1):
            return self._read_stored(i, start, size, raw)
        if isinstance(self._levels[i].raw, np.ndarray):
            # in-memory source: averaging it once costs less memory than the source itself
            return slice_padded(self._cached_virtual(i, target, ratio), start, size)
        fine, _ = self._read_stored(i, start * ratio, size * ratio)
        img = block_mean(fine, ratio.tolist())
        # a coarse pixel exists only when its whole block lies inside the finer level (dask trim)
        n_coarse = np.asarray(self.level_shape(i)) // ratio
        valid = np.ones(tuple(size.tolist()), dtype=bool)
        for ax in range(len(size)):
            idx = start[ax] + np.arange(size[ax])
            ok = (idx >= 0) & (idx < n_coarse[ax])
            shape = [1] * len(size)
            shape[ax] = -1
            valid &= ok.reshape(shape)
        return img, valid

    def _cached_virtual(self, i: int, target: tuple[int, ...], ratio: np.ndarray) -> np.ndarray:
        """Level ``target`` of an in-memory source, averaged once and kept, ``(C, *S)`` float32."""
        if target not in self._cache:
            lv = self._levels[i]
            src = np.asarray(lv.raw)
            if "t" in lv.layout:
                src = src[at_t0(lv.layout)]
            src = to_channels_first(src, lv.layout)
            n = np.asarray(src.shape[1:]) // ratio
            out = np.empty((src.shape[0], *n.tolist()), np.float32)
            # strips of output rows bound the float32 temporaries whatever the source size
            row_bytes = 4 * src.shape[0] * int(np.prod(src.shape[2:])) * int(ratio[0])
            step = max(1, CACHE_STRIP_BYTES // max(1, row_bytes))
            rest = tuple(slice(0, int(k * r)) for k, r in zip(n[1:], ratio[1:]))
            for a in range(0, int(n[0]), step):
                b = min(int(n[0]), a + step)
                strip = src[(slice(None), slice(a * ratio[0], b * ratio[0])) + rest]
                out[:, a:b] = block_mean(strip.astype(np.float32), ratio.tolist())
            self._cache[target] = out
        return self._cache[target]

    def read_window(self, level: int, world_start_yx: Sequence[int], size: int | Sequence[int], raw: bool = False):
        """Raw values of a window at downsample ``level``.

        world_start_yx: world coordinate of the top-left *corner* of the first pixel, a multiple of the
            level's factor per axis (pixel index ``k`` starts at world ``k*f``).
        Returns ``(img (C, *size) float32, valid (*size) bool)``; pixels outside the slide are 0. With ``raw``
        a stored level comes in its stored dtype (e.g. uint8, no conversion); a level averaged from a finer one
        is float32 either way.
        """
        target = self._target_factor(level)
        size_arr = np.broadcast_to(np.asarray(size, dtype=np.int64), (self.spatial_ndim,)).copy()
        world = np.asarray(world_start_yx, dtype=np.int64)
        if np.any(world % np.asarray(target)):
            raise ValueError(f"window start {tuple(world.tolist())} is not a multiple of the level factor {target}.")
        return self._read(target, world // np.asarray(target), size_arr, raw)

    # ---- nested crops -----------------------------------------------------------------------
    def crops(self, center_yx, levels, size, normalizer=None, return_valid=False, patch_size=None):
        """Nested crops centred on a world point, one per level.

        center_yx: world coordinate ``(y, x)`` (``(z, y, x)`` for 3D), level-1 pixel units.
        levels: ascending nested downsample factors, e.g. ``(1, 4, 16)``.
        size: crop side in pixels (same for every level); ``patch_size`` optionally checks divisibility.
        Returns ``img (L, C, size, size) float32`` (3D: ``(L, C, size, size, size)``),
        ``bbox (L, 2, ndim) float32`` world px (centres of first and last pixel), and with
        ``return_valid`` also ``valid (L, size, size) bool`` (False = zero padding outside the slide).
        """
        levels = validate_levels(levels)
        size = validate_crop_size(size, patch_size)
        center = np.asarray(center_yx, dtype=np.float64).reshape(-1)
        if center.shape[0] != self.spatial_ndim or not np.all(np.isfinite(center)):
            raise ValueError(
                f"crop centre {tuple(center.tolist())} must be {self.spatial_ndim} finite world coordinates."
            )
        size_arr = np.full(self.spatial_ndim, size, dtype=np.int64)
        L = len(levels)
        img = np.zeros((L, self.n_channels, *size_arr.tolist()), dtype=np.float32)
        valid = np.zeros((L, *size_arr.tolist()), dtype=bool)
        targets = [self._target_factor(level) for level in levels]
        starts, bbox = nested_crop_boxes(center, targets, size_arr)
        for j, target in enumerate(targets):
            img[j], valid[j] = self._read(target, starts[j], size_arr)
            if j == 0 and not valid[0].any():
                raise ValueError(
                    f"crop centre {tuple(np.round(center, 1).tolist())} is outside the slide "
                    f"(world extent {self.shape}); pick a point on the image."
                )
        if np.isnan(img).any():
            raise ValueError(
                f"the image contains NaN values near world point {tuple(np.round(center, 1).tolist())}; "
                "replace them (e.g. with 0) before running MuViT."
            )
        if normalizer is not None:
            # plain callables (img -> img) work for 2-D; 3-D needs to say where channels are
            img = normalizer(img) if self.spatial_ndim == 2 else normalizer(img, spatial_ndim=3)
            img *= valid[:, None]  # zero padding stays exactly zero after normalisation
        return (img, bbox, valid) if return_valid else (img, bbox)
