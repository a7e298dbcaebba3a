"""npe2 reader: OME-Zarr, pyramidal (OME-)TIFF, SVS/NDPI -> a lazy multiscale image layer (+ labels).

The pyramid comes from ``napari_muvit.data.open_pyramid`` (the one place that knows file formats and
the world frame); the layers come from ``widgets.layers`` (the one place that knows napari transforms).
Labels stored in an OME-Zarr ``labels/`` group are added as Labels layers aligned to the image.

Positions: napari ``scale``/``translate`` of every layer are the OME ``coordinateTransformations`` of its
level 0 (scale and translation, v0.4 and v0.5, read by ``data.geometry.read_ome_transforms``): the slide's
``Pyramid.translation`` is added to the image layers, and a labels image gets its own transforms, so a
slide, a prediction store made from a region of it and their labels overlay exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from napari_muvit.data.geometry import has_transform, index_to_world, read_ome_transforms

from . import layers

log = logging.getLogger(__name__)

SUFFIXES = (".zarr", ".ome.zarr", ".tif", ".tiff", ".ome.tif", ".ome.tiff", ".svs", ".ndpi", ".mrxs", ".scn",
            ".bif", ".vms", ".vmu", ".svslide", ".dcm", ".czi", ".nd2", ".lif")


def _is_supported(path: str) -> bool:
    p = Path(path)
    name = p.name.lower().rstrip("/")
    if name.endswith(SUFFIXES):
        return True
    # an OME-Zarr folder without the suffix, or a folder of DICOM whole-slide instances
    from napari_muvit.data.formats import is_dicom_folder

    return p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zattrs").is_file() or is_dicom_folder(p))


def get_reader(path):
    """npe2 ``get_reader``: a reader function for one supported path, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = str(path)
    if path.lower().endswith(".geojson"):  # QuPath annotations -> a Shapes layer on the slide
        from .annotation_layers import read_annotations

        return read_annotations
    if not _is_supported(path):
        return None
    return read_slide


def read_slide(path) -> list[tuple]:
    """Read one slide: image layer(s) first, then any OME-Zarr labels."""
    from napari_muvit.data import open_pyramid

    if isinstance(path, list):
        path = path[0]
    path = str(path)
    pyramid = open_pyramid(path)
    out = [_translated(layer, pyramid.spatial_translation)
           for layer in layers.image_layers(pyramid, name=pyramid.name or Path(path).name, source=path)]
    if Path(path).is_dir():
        out += _ome_zarr_labels(Path(path), pyramid)
    return out


def _translated(layer: tuple, translation) -> tuple:
    """Shift a layer tuple by the slide translation (physical units, one value per spatial axis)."""
    data, kwargs, kind = layer
    if not any(translation):
        return layer
    shift = np.asarray(translation, dtype=float)
    translate = np.asarray(kwargs["translate"], dtype=float)
    translate[-len(shift):] += shift
    return data, dict(kwargs, translate=tuple(float(t) for t in translate)), kind


# ------------------------------------------------------------------------------------ OME-Zarr labels
def _attrs(group) -> dict:
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))  # v0.5 nests everything under "ome"


def _ome_zarr_labels(path: Path, pyramid) -> list[tuple]:
    """Labels layers for ``path/labels/<name>`` groups, scaled relative to the image's level 0."""
    import dask.array as da
    import zarr

    try:
        root = zarr.open_group(str(path), mode="r")
        if "labels" not in root and "bioformats2raw.layout" in _attrs(root) and "0" in root:
            root, path = root["0"], path / "0"  # bioformats2raw: the image (and its labels) live in series 0
        if "labels" not in root:
            return []
        labels_group = root["labels"]
        names = _attrs(labels_group).get("labels") or list(labels_group.group_keys())
    except Exception as exc:  # unreadable labels must not stop the image from opening
        log.warning("could not list labels in %s: %s", path, exc)
        return []
    out = []
    for name in names:
        try:
            group = labels_group[name]
            attrs = _attrs(group)
            ms = attrs["multiscales"][0]
            datasets = ms["datasets"]
            arrays = [da.from_zarr(group[d["path"]]) for d in datasets]
            ndim0 = arrays[0].ndim
            scale, trans = read_ome_transforms(datasets[0].get("coordinateTransformations"),
                                               ms.get("coordinateTransformations"), ndim0)
        except Exception as exc:
            log.warning("skipping labels %r in %s: %s", name, path, exc)
            continue
        arrays = [_spatial_only(a, pyramid.spatial_ndim) for a in arrays]
        nd = arrays[0].ndim
        ps = np.ones(nd) if pyramid.pixel_size is None else np.asarray(pyramid.pixel_size, dtype=float)[-nd:]
        if any(has_transform(d.get("coordinateTransformations"), "scale") for d in datasets):
            # the labels' own transforms: level = scale / slide pixel, origin from the translation
            level = scale[-nd:] / ps
            origin = (trans[-nd:] - np.asarray(pyramid.spatial_translation)[-nd:]) / ps - index_to_world(0, level)
        else:  # no transforms: labels cover the image; their level = image shape / labels shape
            level = np.array([float(s) / float(n) for s, n in zip(pyramid.shape, arrays[0].shape)])
            origin = np.zeros(nd)
        colors = _label_colors(attrs)
        layer = layers.labels_layer(
            arrays, level=tuple(level.tolist()), pixel_size=pyramid.pixel_size, unit=pyramid.unit, name=f"{name}",
            class_colors=colors, origin=tuple(origin.tolist()), extra_meta={"source": str(path / "labels" / name)},
        )
        out.append(_translated(layer, pyramid.spatial_translation))
    return out


def _spatial_only(arr, spatial_ndim: int):
    """Drop leading singleton t/c axes of a labels array."""
    while arr.ndim > spatial_ndim and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _label_colors(attrs: dict) -> list[str] | None:
    """``image-label.colors`` [{"label-value": k, "rgba": [r, g, b, a]}] -> hex list indexed by value."""
    colors = (attrs.get("image-label") or {}).get("colors")
    if not colors:
        return None
    top = max(int(c["label-value"]) for c in colors)
    out = ["#00000000"] * (top + 1)
    for c in colors:
        rgba = np.asarray(c.get("rgba", [255, 255, 255, 255]), dtype=int)
        out[int(c["label-value"])] = "#" + "".join(f"{v:02x}" for v in rgba[:4])
    return out
