"""Whole-slide formats through OpenSlide (the ``openslide`` extra): NDPI, MRXS, SCN, BIF, Philips TIFF, ...

Each OpenSlide level becomes one stored `Level` whose array-like view calls ``read_region`` for the window
asked for, so nothing is read before a window is; windows are read chunk by chunk (``chunks`` is a multiple
of the file's tile size) through the pyramid's chunk cache. OpenSlide returns RGBA; pixels that are not
(fully) scanned, such as the empty areas of a MIRAX slide, have alpha < 255 and are composited onto the
slide's background colour (``openslide.background-color``, white when absent), which is what a brightfield
slide looks like there. The result is always brightfield RGB (``rgb=True``, uint8).

Levels: OpenSlide's downsamples are rounded to integers (they differ from integers only by the rounding of
odd level sizes); a level whose downsample is not within 1 % of an integer, or does not grow, is left out
(the pyramid then averages it from a finer level when asked). Pixel size: ``openslide.mpp-y`` / ``mpp-x``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from .pyramid import Level, Pyramid

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "napari-muvit[openslide]"'
# suffixes OpenSlide reads best; those no core reader opens need the extra
OPENSLIDE_SUFFIXES = (".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide")
OPENSLIDE_ONLY_SUFFIXES = (".mrxs", ".bif", ".vms", ".vmu", ".svslide")
MIN_CHUNK = 512  # px: read windows in blocks of at least this side (several tiles) to keep calls few
# OpenSlide's vendor names as a slide list shows them
VENDOR_NAMES = {"aperio": "Aperio", "dicom": "DICOM WSI", "generic-tiff": "TIFF", "hamamatsu": "Hamamatsu",
                "leica": "Leica SCN", "mirax": "MIRAX", "philips": "Philips TIFF", "sakura": "Sakura SVSlide",
                "trestle": "Trestle", "ventana": "Ventana BIF", "synthetic": "OpenSlide synthetic"}


def have_openslide() -> bool:
    """Whether OpenSlide (python bindings and the library) can be imported."""
    try:
        import openslide  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def _import_openslide(path: Path):
    try:
        import openslide
    except (ImportError, OSError) as exc:
        raise ValueError(
            f"{path.name!r} is a {path.suffix or 'whole-slide'} slide that needs OpenSlide; install it with "
            f"{INSTALL_HINT} ({type(exc).__name__}: {exc})."
        ) from exc
    return openslide


def detect_vendor(path: Path) -> str | None:
    """OpenSlide's format name for ``path`` (``"philips-tiff"``, ``"generic-tiff"``, ...), None if unreadable.

    Returns None too when OpenSlide is not installed.
    """
    if not have_openslide():
        return None
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # a file OpenSlide cannot even probe
        return None


def _background(props) -> np.ndarray:
    text = str(props.get("openslide.background-color") or "FFFFFF")
    try:
        return np.array([int(text[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)
    except ValueError:
        return np.full(3, 255.0, dtype=np.float32)


class OpenSlideLevel:
    """Array-like ``(Y, X, 3)`` uint8 view of one OpenSlide level; slicing calls ``read_region``.

    ``chunks`` is the block the pyramid's chunk cache reads at once (a multiple of the file's tile).
    Picklable: a copy reopens the file by path (for dask workers in other processes).
    """

    ndim = 3
    dtype = np.dtype(np.uint8)

    def __init__(self, path: str, level: int, slide=None):
        import openslide

        self.path, self.level = str(path), int(level)
        self.slide = slide if slide is not None else openslide.OpenSlide(self.path)
        w, h = self.slide.level_dimensions[self.level]
        self.shape = (int(h), int(w), 3)
        self.downsample = float(self.slide.level_downsamples[self.level])
        props = self.slide.properties
        tile = []
        for key in ("tile-height", "tile-width"):
            try:
                tile.append(max(1, int(props.get(f"openslide.level[{self.level}].{key}", 0))))
            except ValueError:
                tile.append(1)
        self.chunks = tuple(t * max(1, math.ceil(MIN_CHUNK / t)) for t in tile) + (3,)
        self.background = _background(props)

    def __getstate__(self):
        return {"path": self.path, "level": self.level}

    def __setstate__(self, state):
        self.__init__(state["path"], state["level"])

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        if not all(isinstance(k, slice) and k.step in (None, 1) for k in key[:2]):
            raise IndexError(f"OpenSlide levels are read with unit-step slices on Y and X, got {key!r}.")
        y0, y1, _ = key[0].indices(self.shape[0])
        x0, x1, _ = key[1].indices(self.shape[1])
        h, w = max(0, y1 - y0), max(0, x1 - x0)
        if h == 0 or w == 0:
            return np.zeros((h, w, 3), np.uint8)[(slice(None), slice(None), key[2])]
        # read_region takes the top-left corner in level-0 pixels and the size in this level's pixels
        loc = (int(round(x0 * self.downsample)), int(round(y0 * self.downsample)))
        rgba = np.asarray(self.slide.read_region(loc, self.level, (w, h)))
        rgb = rgba[..., :3]
        alpha = rgba[..., 3]
        if (alpha < 255).any():
            a = alpha[..., None].astype(np.float32) / 255.0
            # read_region un-premultiplies: colour * a + background * (1 - a) is the composite
            rgb = np.rint(rgb * a + self.background * (1.0 - a)).astype(np.uint8)
        return rgb[(slice(None), slice(None), key[2])]

    def __array__(self, dtype=None, copy=None):
        arr = self[:, :, :]
        return arr.astype(dtype) if dtype is not None else arr


def _integer_levels(downsamples, dims) -> list[tuple[int, int]]:
    """``(openslide level index, integer factor)`` of the usable levels, finest first."""
    kept: list[tuple[int, int]] = []
    for k, ds in enumerate(downsamples):
        f = max(1, int(round(ds)))
        if abs(ds - f) > 0.01 * f or (kept and f <= kept[-1][1]):
            log.info("OpenSlide level %d (downsample %.4f, size %s) is not used: not an integer step.", k, ds,
                     dims[k])
            continue
        if not kept and f != 1:
            raise ValueError(f"the first OpenSlide level has downsample {ds}; a slide must start at full resolution.")
        kept.append((k, f))
    return kept


def _pixel_size(props) -> tuple[float, float] | None:
    try:
        my, mx = float(props.get("openslide.mpp-y") or "nan"), float(props.get("openslide.mpp-x") or "nan")
    except ValueError:
        return None
    if math.isfinite(mx) and math.isfinite(my) and mx > 0 and my > 0:
        return (my, mx)
    return None


def open_openslide(path, name: str = "image") -> Pyramid:
    """A slide OpenSlide reads, as a lazy brightfield RGB `Pyramid` (see the module docstring).

    Raises ValueError naming the ``openslide`` extra when OpenSlide is not installed, and a ValueError
    naming the file when OpenSlide cannot read it.
    """
    path = Path(path)
    openslide = _import_openslide(path)
    try:
        slide = openslide.OpenSlide(str(path))
    except Exception as exc:  # OpenSlideUnsupportedFormatError, OpenSlideError
        raise ValueError(
            f"{str(path)!r} could not be read by OpenSlide ({type(exc).__name__}: {exc}); check that the file "
            "is a whole-slide image and is complete (MIRAX slides need their data folder beside the .mrxs)."
        ) from exc
    kept = _integer_levels(list(slide.level_downsamples), list(slide.level_dimensions))
    levels = [Level(OpenSlideLevel(str(path), k, slide), "yxc", (f, f)) for k, f in kept]
    if len(levels) == 1:  # a single-level slide gets lazy averaged levels, as any single array does
        h, w = levels[0].raw.shape[:2]
        f = 1
        while min(h, w) // f >= 256 and min(h, w) // (2 * f) >= 1:
            f *= 2
            levels.append(Level(None, "yxc", (f, f), source=0))
    pixel = _pixel_size(slide.properties)
    pyr = Pyramid(levels, name=name, pixel_size=pixel, unit="micrometer" if pixel else None, rgb=True)
    vendor = slide.properties.get("openslide.vendor") or ""
    pyr.metadata["format"] = VENDOR_NAMES.get(vendor, vendor or "OpenSlide")
    pyr._file = slide  # keeps the slide open as long as the pyramid lives
    return pyr
