"""DICOM whole-slide images (VL Whole Slide Microscopy) through wsidicom (the ``dicom`` extra).

A DICOM WSI is a folder of instances (usually one file per pyramid level). Each level of the slide's
first pyramid becomes one stored `Level` whose array-like view reads only the window asked for with
``WsiDicom.read_region`` (tile by tile, the tiles decoded by wsidicom's codecs), so nothing is read
before a window is. Levels: wsidicom keys them by ``log2(downsample)``, so factors are powers of two.
Pixel size comes from the Pixel Spacing (mm) of the base level, in micrometres.

Colour (``SamplesPerPixel = 3``) is brightfield RGB (``rgb=True``); monochrome instances with several
optical paths (fluorescence) give one channel per optical path, named by its identifier or description.
The default focal plane is read.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

from .pyramid import Level, Pyramid

INSTALL_HINT = 'pip install "napari-muvit[dicom]"'
MIN_CHUNK = 512  # px: windows are read in blocks of at least this side (several tiles)


def _import_wsidicom(path: Path):
    try:
        import wsidicom
    except ImportError as exc:
        raise ValueError(
            f"{path.name!r} is a DICOM whole-slide image that needs wsidicom; install it with {INSTALL_HINT}."
        ) from exc
    return wsidicom


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (by their ``DICM`` marker, whatever the suffix)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom_file(p))


class DicomLevel:
    """Array-like ``(Y, X, 3)`` (colour) or ``(C, Y, X)`` (one channel per optical path) view of one level."""

    def __init__(self, wsi, level, paths: list[str] | None, rgb: bool):
        self.wsi, self.level_key, self.paths, self.rgb = wsi, int(level.level), paths, rgb
        self._lock = threading.Lock()  # napari and dask read windows from several threads; read one at a time
        w, h = int(level.size.width), int(level.size.height)
        ts = level.tile_size
        tile = (int(ts.height), int(ts.width))
        block = tuple(t * max(1, math.ceil(MIN_CHUNK / t)) for t in tile)
        if rgb:
            self.shape, self.chunks = (h, w, 3), block + (3,)
        else:
            self.shape, self.chunks = (len(paths), h, w), (1,) + block
        self.ndim = 3
        self.dtype = np.dtype(np.uint16 if int(level.default_instance.image_data.bits) > 8 else np.uint8)

    def _region(self, y0, y1, x0, x1, path=None) -> np.ndarray:
        with self._lock:
            arr = np.asarray(self.wsi.read_region((x0, y0), self.level_key, (x1 - x0, y1 - y0), path=path,
                                                  threads=1, as_array=True))
        return arr.reshape(y1 - y0, x1 - x0, -1)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        yk, xk, ck = (key[0], key[1], key[2]) if self.rgb else (key[1], key[2], key[0])
        if not all(isinstance(k, slice) and k.step in (None, 1) for k in (yk, xk)):
            raise IndexError(f"DICOM levels are read with unit-step slices on Y and X, got {key!r}.")
        y0, y1, _ = yk.indices(self.shape[-3 if self.rgb else -2])
        x0, x1, _ = xk.indices(self.shape[-2 if self.rgb else -1])
        y1, x1 = max(y0, y1), max(x0, x1)
        if self.rgb:
            if y1 == y0 or x1 == x0:
                return np.zeros((y1 - y0, x1 - x0, 3), self.dtype)[:, :, ck]
            return self._region(y0, y1, x0, x1)[:, :, :3].astype(self.dtype, copy=False)[:, :, ck]
        chans = range(len(self.paths))[ck] if isinstance(ck, slice) else [ck]
        out = np.zeros((len(chans), y1 - y0, x1 - x0), self.dtype)
        if y1 > y0 and x1 > x0:
            for j, c in enumerate(chans):
                out[j] = self._region(y0, y1, x0, x1, path=self.paths[c])[..., 0]
        return out if isinstance(ck, slice) else out[0]

    def __array__(self, dtype=None, copy=None):
        arr = self[:, :, :]
        return arr.astype(dtype) if dtype is not None else arr


def _optical_paths(level) -> list[str]:
    """Optical path identifiers of a level in file order (instances by Instance Number, then sequence order)."""
    order: list[str] = []
    instances = sorted(level.instances.values(), key=lambda i: int(getattr(i.dataset, "InstanceNumber", 0) or 0))
    for inst in instances:
        for item in getattr(inst.dataset, "OpticalPathSequence", []) or []:
            ident = str(getattr(item, "OpticalPathIdentifier", ""))
            if ident and ident not in order:
                order.append(ident)
    known = [str(p) for p in level.optical_paths]
    return [p for p in order if p in known] + sorted(p for p in known if p not in order)


def open_dicom(path, name: str = "image") -> Pyramid:
    """A DICOM WSI (a folder of instances, or one ``.dcm`` file: its folder is read) as a lazy `Pyramid`.

    Raises ValueError naming the ``dicom`` extra when wsidicom is not installed, and a ValueError naming
    the folder when it holds no readable whole-slide image.
    """
    path = Path(path)
    wsidicom = _import_wsidicom(path)
    folder = path if path.is_dir() else path.parent
    files = dicom_files(folder)
    if not files:
        raise ValueError(f"folder {str(folder)!r} holds no DICOM files; pick the folder of a DICOM whole-slide image.")
    try:
        wsi = wsidicom.WsiDicom.open(files)
        pyramid = wsi.pyramid
        base = pyramid.base_level
    except Exception as exc:
        raise ValueError(
            f"{str(folder)!r} could not be read as a DICOM whole-slide image ({type(exc).__name__}: {exc}); "
            "the folder must hold the VL Whole Slide Microscopy instances of one slide."
        ) from exc
    spp = int(base.default_instance.image_data.samples_per_pixel)
    rgb = spp == 3
    paths = None if rgb else _optical_paths(base)
    levels = []
    for lvl in pyramid.levels:
        f = 2 ** (int(lvl.level) - int(base.level))
        if levels and f <= levels[-1].factor[-1]:
            continue
        arr = DicomLevel(wsi, lvl, paths, rgb)
        levels.append(Level(arr, "yxc" if rgb else "cyx", (f, f)))
    if len(levels) == 1:  # a single-level slide gets lazy averaged levels, as any single array does
        h, w = (levels[0].raw.shape[:2] if rgb else levels[0].raw.shape[1:])
        f = 1
        while min(h, w) // f >= 256 and min(h, w) // (2 * f) >= 1:
            f *= 2
            levels.append(Level(None, levels[0].layout, (f, f), source=0))
    try:
        mpp = base.mpp  # SizeMm in um/px
        pixel = (float(mpp.height), float(mpp.width))
    except Exception:  # no Pixel Spacing in the file
        pixel = None
    pyr = Pyramid(levels, name=name, pixel_size=pixel, unit="micrometer" if pixel else None,
                  channel_names=paths, rgb=rgb)
    pyr.metadata["format"] = "DICOM WSI"
    pyr._file = wsi  # keeps the files open as long as the pyramid lives
    return pyr
