"""Pyramidal TIFF / OME-TIFF (tifffile), whole-slide formats (tiffslide, openslide) and bioio formats.

TIFF levels are read through tifffile's zarr store, so a window read decodes only the tiles it needs.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np

from .array_pyramids import (
    check_levels_ascending,
    factors_from_shapes,
    is_brightfield_rgb,
    pyramid_from_array,
    pyramid_from_arrays,
)
from .pyramid import Level, Pyramid

_TIFF_AXES = {"Y": "y", "X": "x", "Z": "z", "C": "c", "S": "c", "T": "t"}
_UM_PER = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def _not_an_image(path: Path, exc: Exception) -> ValueError:
    return ValueError(f"{str(path)!r} could not be read as an image ({type(exc).__name__}: {exc}).")


def _tiff_layout(axes: str, shape) -> str:
    letters = []
    for a, n in zip(axes, shape):
        if a in _TIFF_AXES:
            letters.append(_TIFF_AXES[a])
        elif "z" not in letters and "z" not in (_TIFF_AXES.get(b) for b in axes):
            letters.append("z")  # generic image/sequence axis (I, Q): treat as depth
        elif n == 1:
            letters.append("t")  # singleton extra axis: read index 0
        else:
            raise ValueError(f"TIFF axes {axes!r} (shape {tuple(shape)}) cannot be mapped to (C, Z, Y, X).")
    if letters.count("c") > 1:
        raise ValueError(f"TIFF axes {axes!r} hold both channels and colour samples; this is not supported.")
    return "".join(letters)


def _tiff_pixel_size(tif) -> tuple[tuple[float, ...] | None, str | None]:
    """Level-0 (y, x) pixel size in µm from OME-XML or the resolution tags."""
    ome = tif.ome_metadata
    if ome:
        sizes = {}
        for ax in "XYZ":
            m = re.search(rf'PhysicalSize{ax}="([0-9.eE+-]+)"', ome)
            if m:
                u = re.search(rf'PhysicalSize{ax}Unit="([^"]+)"', ome)
                sizes[ax] = float(m.group(1)) * _UM_PER.get(u.group(1) if u else "µm", 1.0)
        if "X" in sizes and "Y" in sizes:
            return ((sizes["Y"], sizes["X"]), "micrometer")
    page = tif.pages[0]
    tags = page.tags
    if "XResolution" in tags and "YResolution" in tags and "ResolutionUnit" in tags:
        unit = int(tags["ResolutionUnit"].value)
        per = {2: 25400.0, 3: 10000.0}.get(unit)
        xr, yr = tags["XResolution"].value, tags["YResolution"].value
        if per and xr[0] and yr[0] and (xr[0] / xr[1]) > 1:
            return ((per * yr[1] / yr[0], per * xr[1] / xr[0]), "micrometer")
    return None, None


def _ome_channels(tif, n_channels: int) -> tuple[list[str] | None, list | None]:
    """``(names, colours)`` of the first OME-XML image's channels (``Channel/@Name``, ``@Color``), each
    None unless there is one per channel."""
    ome = tif.ome_metadata
    if not ome:
        return None, None
    try:
        import xml.etree.ElementTree as ET

        image = next(el for el in ET.fromstring(ome).iter() if el.tag.rsplit("}", 1)[-1] == "Image")
        channels = [el for el in image.iter() if el.tag.rsplit("}", 1)[-1] == "Channel"]
    except Exception:  # malformed OME-XML: names are optional
        return None, None
    if len(channels) != n_channels:
        return None, None
    names = [ch.get("Name") for ch in channels]
    colors = [int(c) if c and c.lstrip("-").isdigit() else None for c in (ch.get("Color") for ch in channels)]
    return ([str(n) for n in names] if all(names) else None), (colors if any(c is not None for c in colors) else None)


def open_tiff(path: Path, name: str = "image") -> Pyramid:
    """Pyramidal OME-TIFF / TIFF: the levels of the first series (a plain TIFF gets lazy levels)."""
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(str(path))
        series = tif.series[0]
    except Exception as exc:
        raise _not_an_image(path, exc) from exc
    layout = _tiff_layout(series.axes, series.shape)
    arrays = [zarr.open(series.aszarr(level=k), mode="r") for k in range(len(series.levels))]
    pixel_size, unit = _tiff_pixel_size(tif)
    if "z" in layout and pixel_size is not None:
        pixel_size = None  # Z spacing is not in the resolution tags; better none than a wrong one
    if len(arrays) == 1:
        pyr = pyramid_from_array(arrays[0], name=name, axes=layout)
    else:
        pyr = pyramid_from_arrays(arrays, name=name, axes=layout)
    pyr.pixel_size, pyr.unit = pixel_size, unit
    names, colors = (None, None) if pyr.rgb else _ome_channels(tif, pyr.n_channels)
    if not pyr.rgb and "c" in layout and is_brightfield_rgb(pyr.n_channels, pyr.dtype, names, colors):
        # three uint8 channels stored as planes (not samples): the same rule as OME-Zarr
        pyr.rgb, pyr.channel_names = True, ["red", "green", "blue"]
    elif names:
        pyr.channel_names = names
    _read_tiles_directly(pyr, series, arrays)
    pyr._file = tif  # keeps the file handle open as long as the pyramid lives
    return pyr


def _read_tiles_directly(pyr: Pyramid, series, arrays) -> None:
    """Stored levels that are plain tiled pages read their tiles without zarr (`data.tiff_tiles`)."""
    from .tiff_tiles import TiffTiles

    by_array = {id(a): lv for a, lv in zip(arrays, series.levels)}
    pyr.add_chunk_readers(lambda raw: TiffTiles.for_level(by_array[id(raw)], raw) if id(raw) in by_array else None)


def open_slide(path: Path, name: str = "image") -> Pyramid:
    """SVS, NDPI and other whole-slide files through tiffslide (openslide when tiffslide fails)."""
    try:
        import tiffslide

        slide = tiffslide.TiffSlide(str(path))
        group = slide.zarr_group
        arrays = [group[str(k)] for k in range(slide.level_count)]
        downsamples = list(slide.level_downsamples)
        props = slide.properties
        mpp = (props.get("tiffslide.mpp-y"), props.get("tiffslide.mpp-x"))
    except Exception as exc:
        try:
            return _open_openslide(path, name)
        except ImportError:
            raise _not_an_image(path, exc) from exc
    layout = "yxc" if arrays[0].ndim == 3 else "yx"
    levels = []
    for k, (arr, ds) in enumerate(zip(arrays, downsamples)):
        f = int(round(ds))
        factors_from_shapes(arrays[0].shape[:2], arr.shape[:2], k)  # checks the aspect ratio
        levels.append(Level(arr, layout, (f, f)))
    check_levels_ascending([lv.factor for lv in levels])
    pixel = tuple(float(m) for m in mpp) if all(m for m in mpp) else None
    pyr = Pyramid(levels, name=name, pixel_size=pixel, unit="micrometer" if pixel else None, rgb=layout == "yxc")
    with contextlib.suppress(AttributeError, IndexError):  # a tiffslide without its TiffFile: read through zarr
        _read_tiles_directly(pyr, slide.ts_tifffile.series[0], arrays)  # its levels are the series' (shapes checked)
    pyr._file = slide
    return pyr


class _OpenSlideLevel:
    """Array-like view (Y, X, 3) uint8 of one openslide level; slicing calls ``read_region``."""

    def __init__(self, slide, level: int):
        self.slide, self.level = slide, level
        w, h = slide.level_dimensions[level]
        self.shape, self.dtype, self.ndim = (h, w, 3), np.dtype(np.uint8), 3
        self.downsample = slide.level_downsamples[level]

    def __getitem__(self, key):
        ys, xs = key[0], key[1]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        loc = (int(round(x0 * self.downsample)), int(round(y0 * self.downsample)))
        rgba = np.asarray(self.slide.read_region(loc, self.level, (x1 - x0, y1 - y0)))
        return rgba[..., :3][(slice(None), slice(None)) + tuple(key[2:])]


def _open_openslide(path: Path, name: str) -> Pyramid:
    import openslide  # optional; ImportError when absent

    slide = openslide.OpenSlide(str(path))
    levels = [
        Level(_OpenSlideLevel(slide, k), "yxc", (int(round(d)),) * 2) for k, d in enumerate(slide.level_downsamples)
    ]
    check_levels_ascending([lv.factor for lv in levels])
    mx, my = slide.properties.get("openslide.mpp-x"), slide.properties.get("openslide.mpp-y")
    pixel = (float(my), float(mx)) if mx and my else None
    pyr = Pyramid(levels, name=name, pixel_size=pixel, unit="micrometer" if pixel else None, rgb=True)
    pyr._file = slide
    return pyr


def open_with_bioio(path: Path, name: str = "image") -> Pyramid:
    """Any format a bioio plugin reads, as one level plus lazy coarser levels."""
    try:
        from bioio import BioImage

        img = BioImage(str(path))
        dims = img.dims
        rgb = "S" in dims.order and dims.S > 1
        spatial = "ZYX" if dims.Z > 1 else "YX"
        order = ("C" if dims.C > 1 else "") + spatial + ("S" if rgb else "")
        data = img.get_image_dask_data(order, T=0, **({} if dims.Z > 1 else {"Z": 0}),
                                       **({} if dims.C > 1 else {"C": 0}))
        sizes = img.physical_pixel_sizes
        try:
            names = [str(n) for n in (img.channel_names or [])]
        except Exception:  # channel names are optional metadata
            names = []
    except Exception as exc:
        raise _not_an_image(path, exc) from exc
    axes = order.lower().replace("s", "c")
    pyr = pyramid_from_array(data, name=name, axes=axes)
    phys = [sizes.Z, sizes.Y, sizes.X][-len(spatial):]
    if all(p for p in phys):
        pyr.pixel_size, pyr.unit = tuple(float(p) for p in phys), "micrometer"
    if not rgb and dims.C > 1:
        if is_brightfield_rgb(dims.C, pyr.dtype, names):  # the same rule as OME-Zarr and TIFF
            pyr.rgb, pyr.channel_names = True, ["red", "green", "blue"]
        elif len(names) == dims.C:
            pyr.channel_names = names
    return pyr
