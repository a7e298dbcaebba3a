"""Which reader opens which slide file, the extra each needs, and a short format name for lists.

Core readers (always installed): OME-Zarr, (OME-)TIFF through tifffile, SVS (and NDPI/SCN when
OpenSlide is absent) through tiffslide, and what bioio's core plugins read. Extras:

========  ===============================================  =========================================
extra     packages                                         formats
========  ===============================================  =========================================
openslide openslide-python, openslide-bin                  NDPI, MRXS, SCN, BIF, VMS/VMU, Philips TIFF,
                                                           Ventana/Leica/Aperio TIFF (and any TIFF
                                                           OpenSlide recognises from its vendor tags)
dicom     wsidicom                                         DICOM WSI (a folder of ``.dcm`` instances)
czi       pylibczirw, bioio-czi                            Zeiss CZI
nd2       bioio-nd2                                        Nikon ND2
lif       bioio-lif                                        Leica LIF
formats   all of the above
========  ===============================================  =========================================

`open_extra_format` is called by `readers.open_pyramid` before the core readers: it returns a `Pyramid`
for the files the extras read, None for everything else, and raises a ValueError naming the extra to
install when a file needs one that is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from . import openslide_reader
from .pyramid import Pyramid

# display names by suffix (longest suffix first where they overlap)
FORMAT_NAMES = {
    ".ome.zarr": "OME-Zarr", ".zarr": "OME-Zarr", ".ome.tiff": "OME-TIFF", ".ome.tif": "OME-TIFF",
    ".svs": "Aperio SVS", ".ndpi": "Hamamatsu NDPI", ".vms": "Hamamatsu VMS", ".vmu": "Hamamatsu VMU",
    ".mrxs": "MIRAX", ".scn": "Leica SCN", ".bif": "Ventana BIF", ".svslide": "Sakura SVSlide",
    ".qptiff": "Akoya QPTIFF", ".dcm": "DICOM WSI", ".czi": "Zeiss CZI", ".nd2": "Nikon ND2",
    ".lif": "Leica LIF", ".tiff": "TIFF", ".tif": "TIFF", ".btf": "BigTIFF",
}
# every suffix a slide file can have (a folder of DICOM files is a slide too)
SLIDE_SUFFIXES = tuple(FORMAT_NAMES)
_BIOIO_PLUGINS = {".nd2": ("bioio_nd2", "nd2"), ".lif": ("bioio_lif", "lif")}
_TIFF = (".tif", ".tiff")


def install_hint(extra: str) -> str:
    return f'pip install "napari-muvit[{extra}]"'


def _has_module(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _suffix(path: Path) -> str:
    lower = path.name.lower()
    return next((s for s in FORMAT_NAMES if lower.endswith(s)), "")


def is_dicom_folder(path: Path) -> bool:
    """A folder that is not a zarr group and holds DICOM files."""
    from .dicom_reader import is_dicom_file

    if not path.is_dir() or any((path / f).exists() for f in ("zarr.json", ".zattrs", ".zgroup")):
        return False
    return any(p.is_file() and is_dicom_file(p) for p in path.iterdir())


def format_name(path) -> str:
    """Short human name of a slide's format from its name (``"Hamamatsu NDPI"``, ``"DICOM WSI"``, ...)."""
    path = Path(path)
    if path.is_dir() and is_dicom_folder(path):
        return "DICOM WSI"
    return FORMAT_NAMES.get(_suffix(path), path.suffix.lstrip(".").upper() or "folder")


def open_extra_format(path: Path, name: str) -> Pyramid | None:
    """The `Pyramid` of a file read through an extra's library, or None when a core reader handles it.

    Raises ValueError naming the extra (``pip install "napari-muvit[...]"``) when the file needs one that
    is not installed.
    """
    path = Path(path)
    suffix = _suffix(path)
    if path.is_dir():
        if is_dicom_folder(path):
            from .dicom_reader import open_dicom

            return open_dicom(path, name=name)
        return None
    if suffix == ".dcm":
        from .dicom_reader import open_dicom

        return open_dicom(path, name=name)
    if suffix in openslide_reader.OPENSLIDE_SUFFIXES:
        if openslide_reader.have_openslide():
            return openslide_reader.open_openslide(path, name=name)
        if suffix in openslide_reader.OPENSLIDE_ONLY_SUFFIXES:
            raise ValueError(
                f"{path.name!r} is a {FORMAT_NAMES[suffix]} slide that needs OpenSlide; install it with "
                f"{install_hint('openslide')}."
            )
        return None  # NDPI / SCN: tiffslide (core) reads them
    if suffix in _TIFF:
        # vendor TIFFs (Philips, Ventana, Leica, Aperio) carry their levels and pixel size in vendor tags
        vendor = openslide_reader.detect_vendor(path)
        if vendor not in (None, "generic-tiff"):
            return openslide_reader.open_openslide(path, name=name)
        return None
    if suffix == ".czi":
        from .czi_reader import czi_depth, open_czi

        if czi_depth(path) == 1:
            return open_czi(path, name=name)
        if not _has_module("bioio_czi"):
            raise ValueError(
                f"{path.name!r} is a Z-stack CZI that is read through bioio-czi; install it with "
                f"{install_hint('czi')}."
            )
        return None
    if suffix in _BIOIO_PLUGINS:
        module, extra = _BIOIO_PLUGINS[suffix]
        if not _has_module(module):
            raise ValueError(
                f"{path.name!r} is a {FORMAT_NAMES[suffix]} file that needs the {module.replace('_', '-')} "
                f"plugin; install it with {install_hint(extra)}."
            )
        return None  # the core bioio path reads it with that plugin
    return None
