"""Zeiss CZI slides through libCZI (``pylibczirw``, the ``czi`` extra), read window by window.

A CZI mosaic is a set of sub-blocks placed on a plane; ``CziReader.read(roi=...)`` composes only the
sub-blocks that overlap the window asked for, so the full-resolution level is read lazily whatever the
slide size. Coarser levels are the pyramid's lazy area averages of that level (factor-2 steps): libCZI's
own zoomed reads resample by nearest neighbour, which would shift coarse pixels off the world frame.

Colour (``Bgr24``/``Bgr48``: memory order blue, green, red) is returned as brightfield RGB (``rgb=True``)
and areas without sub-blocks read as white; grey channels (``Gray8/16/32Float``) are channels-first with
the channel names of the file, areas without sub-blocks read as 0. Pixel size: the ``Scaling/Items/Distance``
entries (metres) in micrometres. Time ``T = 0`` and the first ``Z`` plane are read: a Z-stack CZI is opened
as 3-D through bioio-czi instead (see `formats`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .pyramid import Level, Pyramid

INSTALL_HINT = 'pip install "napari-muvit[czi]"'
CHUNK = 1024  # px: window reads are blocks of this side, cached by the pyramid
_DTYPES = {"Gray8": np.uint8, "Gray16": np.uint16, "Gray32Float": np.float32, "Bgr24": np.uint8,
           "Bgr48": np.uint16, "Bgr96Float": np.float32}


def import_pyczi(path: Path):
    try:
        from pylibCZIrw import czi as pyczi
    except ImportError as exc:
        raise ValueError(
            f"{path.name!r} is a Zeiss CZI file that needs pylibczirw; install it with {INSTALL_HINT}."
        ) from exc
    return pyczi


class CziLevel:
    """Array-like full-resolution view: ``(Y, X, 3)`` RGB or ``(C, Y, X)`` grey; slicing reads a CZI window."""

    ndim = 3

    def __init__(self, reader, rect, channels: list[int], pixel_type: str):
        self.reader, self.rect, self.channels, self.pixel_type = reader, rect, channels, pixel_type
        self._lock = threading.Lock()  # napari and dask read windows from several threads; libCZI reads one at a time
        self.rgb = pixel_type.startswith("Bgr")
        self.dtype = np.dtype(_DTYPES[pixel_type])
        h, w = int(rect.h), int(rect.w)
        if self.rgb:
            self.shape, self.chunks = (h, w, 3), (CHUNK, CHUNK, 3)
        else:
            self.shape, self.chunks = (len(channels), h, w), (1, CHUNK, CHUNK)

    def _read(self, c: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        roi = (int(self.rect.x) + x0, int(self.rect.y) + y0, x1 - x0, y1 - y0)
        background = (1.0, 1.0, 1.0) if self.rgb else (0.0, 0.0, 0.0)
        with self._lock:
            out = self.reader.read(roi=roi, plane={"C": c, "Z": 0, "T": 0}, pixel_type=self.pixel_type,
                                   background_pixel=background)
        return np.asarray(out).reshape(y1 - y0, x1 - x0, -1)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        yk, xk, ck = (key[0], key[1], key[2]) if self.rgb else (key[1], key[2], key[0])
        if not all(isinstance(k, slice) and k.step in (None, 1) for k in (yk, xk)):
            raise IndexError(f"CZI levels are read with unit-step slices on Y and X, got {key!r}.")
        y0, y1, _ = yk.indices(self.shape[0 if self.rgb else 1])
        x0, x1, _ = xk.indices(self.shape[1 if self.rgb else 2])
        y1, x1 = max(y0, y1), max(x0, x1)
        if self.rgb:
            if y1 == y0 or x1 == x0:
                return np.zeros((y1 - y0, x1 - x0, 3), self.dtype)[:, :, ck]
            return self._read(self.channels[0], y0, y1, x0, x1)[:, :, ::-1][:, :, ck]  # BGR -> RGB
        chans = range(len(self.channels))[ck] if isinstance(ck, slice) else [ck]
        out = np.zeros((len(chans), y1 - y0, x1 - x0), self.dtype)
        if y1 > y0 and x1 > x0:
            for j, c in enumerate(chans):
                out[j] = self._read(self.channels[c], y0, y1, x0, x1)[..., 0]
        return out if isinstance(ck, slice) else out[0]

    def __array__(self, dtype=None, copy=None):
        arr = self[:, :, :]
        return arr.astype(dtype) if dtype is not None else arr


def _as_list(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _metadata(reader) -> tuple[tuple[float, float] | None, list[str]]:
    """Level-0 ``(y, x)`` pixel size in µm (or None) and the channel names ('' where absent)."""
    try:
        meta = reader.metadata["ImageDocument"]["Metadata"]
    except (KeyError, TypeError):
        return None, []
    sizes = {}
    for item in _as_list(((meta.get("Scaling") or {}).get("Items") or {}).get("Distance")):
        try:
            sizes[item["@Id"]] = float(item["Value"]) * 1e6
        except (KeyError, TypeError, ValueError):
            continue
    pixel = (sizes["Y"], sizes["X"]) if sizes.get("X", 0) > 0 and sizes.get("Y", 0) > 0 else None
    try:
        chans = _as_list(meta["Information"]["Image"]["Dimensions"]["Channels"]["Channel"])
    except (KeyError, TypeError):
        chans = []
    names = [str(c.get("@Name") or c.get("Name") or "") if isinstance(c, dict) else "" for c in chans]
    return pixel, names


def czi_depth(path) -> int:
    """Number of Z planes of a CZI file (1 for a 2-D slide)."""
    pyczi = import_pyczi(Path(path))
    with pyczi.open_czi(str(path)) as reader:
        lo, hi = reader.total_bounding_box.get("Z", (0, 1))
    return int(hi - lo)


def open_czi(path, name: str = "image", min_size: int = 256) -> Pyramid:
    """A 2-D CZI slide as a lazy `Pyramid` (see the module docstring)."""
    path = Path(path)
    pyczi = import_pyczi(path)
    try:
        reader = pyczi.CziReader(str(path))
        rect = reader.total_bounding_rectangle
        c0, c1 = reader.total_bounding_box.get("C", (0, 1))
        types = reader.pixel_types
    except Exception as exc:
        raise ValueError(f"{str(path)!r} could not be read as a CZI file ({type(exc).__name__}: {exc}).") from exc
    channels = list(range(int(c0), int(c1)))
    kinds = {types.get(c, types.get(0)) for c in channels}
    if len(kinds) != 1 or None in kinds:
        raise ValueError(
            f"CZI {path.name!r} mixes pixel types {sorted(map(str, kinds))} across channels; only one pixel "
            "type per image is supported."
        )
    (pixel_type,) = kinds
    if pixel_type.startswith("Bgr") and len(channels) != 1:
        raise ValueError(f"CZI {path.name!r} has {len(channels)} colour channels; one colour channel is supported.")
    arr = CziLevel(reader, rect, channels, pixel_type)
    layout = "yxc" if arr.rgb else "cyx"
    levels = [Level(arr, layout, (1, 1))]
    h, w = int(rect.h), int(rect.w)
    f = 1
    while min(h, w) // f >= min_size and min(h, w) // (2 * f) >= 1:
        f *= 2
        levels.append(Level(None, layout, (f, f), source=0))
    pixel, names = _metadata(reader)
    names = names[c0:c1] if len(names) >= c1 else []
    if names and not all(names):
        names = [n or f"channel {i}" for i, n in enumerate(names)]
    pyr = Pyramid(levels, name=name, pixel_size=pixel, unit="micrometer" if pixel else None,
                  channel_names=None if arr.rgb else (names or None), rgb=arr.rgb)
    pyr.metadata["format"] = "Zeiss CZI"
    pyr._file = reader  # keeps the file open as long as the pyramid lives
    return pyr
