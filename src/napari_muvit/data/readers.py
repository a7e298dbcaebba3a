"""`open_pyramid`: one entry point from any source (path, zarr group, arrays) to a `Pyramid`.

Arrays and napari multiscale lists are built by `array_pyramids.py`; OME-Zarr is read in `ome_zarr.py`; TIFF,
whole-slide formats and everything bioio reads in `slide_readers.py`. Those modules share only
`array_pyramids` (level checks, the brightfield-RGB rule), so no reader imports `readers` back.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .array_pyramids import (  # noqa: F401  (public here too: data.readers.is_brightfield_rgb, ...)
    DEFAULT_MIN_SIZE,
    check_levels_ascending,
    factors_from_shapes,
    guess_axes,
    is_brightfield_rgb,
    pyramid_from_array,
    pyramid_from_arrays,
)
from .pyramid import Pyramid

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".mrxs", ".vms", ".vmu", ".qptiff")


def open_pyramid(
    source,
    name: str | None = None,
    *,
    axes: str | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    downsample_z: bool = False,
    strict: bool = False,
) -> Pyramid:
    """Open an image as a lazy `Pyramid` in world coordinates.

    source: a path (OME-Zarr v0.4/v0.5 directory, pyramidal OME-TIFF/TIFF, SVS/NDPI, any bioio format),
        a ``zarr.Group`` holding OME-Zarr multiscales, a list of arrays (napari multiscale data, finest
        first) or one array (numpy/dask/zarr).
    axes: axis letters of array inputs, e.g. ``"yx"``, ``"yxc"`` (RGB), ``"cyx"``, ``"zyx"``, ``"czyx"``;
        guessed from the shape when omitted (a trailing axis of 3 or 4 is RGB; a leading axis of
        at most 8 on a 3-D array is channels).
    min_size: arrays without levels are coarsened by 2 until the smallest Y/X side is below this.
    downsample_z: 3-D arrays without levels are also coarsened along Z.
    strict: refuse (``ValueError``) a zarr chunk missing from the store instead of reading it as fill
        value with a warning (see `Pyramid`).
    """
    if isinstance(source, (str, os.PathLike)):
        pyr = _open_path(Path(source), name, strict)
        pyr.strict = pyr.strict or strict
        return pyr
    zarr = sys.modules.get("zarr")  # a zarr.Group exists only once zarr is imported: no import for arrays
    if zarr is not None and isinstance(source, zarr.Group):
        from .ome_zarr import open_ome_zarr_group

        return open_ome_zarr_group(source, name=name or "image", strict=strict)
    if isinstance(source, (list, tuple)):
        return pyramid_from_arrays(list(source), name=name or "image", axes=axes)
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        return pyramid_from_array(source, name=name or "image", axes=axes, min_size=min_size,
                                  downsample_z=downsample_z)
    raise ValueError(
        f"cannot open {type(source).__name__!r} as an image; give a file path, an array or a list of arrays."
    )


def _open_path(path: Path, name: str | None, strict: bool = False) -> Pyramid:
    if not path.exists():
        raise FileNotFoundError(f"image {str(path)!r} does not exist; check the path.")
    name = name or path.name.split(".")[0] or "image"
    from .formats import open_extra_format  # OpenSlide, DICOM, CZI, ND2, LIF (optional extras)

    extra = open_extra_format(path, name)
    if extra is not None:
        return extra
    lower = path.name.lower()
    if path.is_dir():
        if any((path / f).exists() for f in ("zarr.json", ".zattrs", ".zgroup")):
            from .ome_zarr import open_ome_zarr

            return open_ome_zarr(path, name=name, strict=strict)
        raise ValueError(f"folder {str(path)!r} is not an OME-Zarr image (no zarr.json or .zattrs inside).")
    from . import slide_readers

    if lower.endswith(SLIDE_SUFFIXES):
        return slide_readers.open_slide(path, name=name)
    if lower.endswith(TIFF_SUFFIXES):
        return slide_readers.open_tiff(path, name=name)
    return slide_readers.open_with_bioio(path, name=name)
