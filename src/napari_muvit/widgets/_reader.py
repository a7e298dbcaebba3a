"""npe2 reader: OME-Zarr, pyramidal (OME-)TIFF, SVS/NDPI -> a lazy multiscale image layer (+ labels).

The pyramid comes from ``napari_muvit.data.open_pyramid`` (the one place that knows file formats and
the world frame); the layers come from ``widgets.layers`` (the one place that knows napari transforms).
Labels stored in an OME-Zarr ``labels/`` group are added as Labels layers aligned to the image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import layers

log = logging.getLogger(__name__)

SUFFIXES = (".zarr", ".ome.zarr", ".tif", ".tiff", ".ome.tif", ".ome.tiff", ".svs", ".ndpi")


def _is_supported(path: str) -> bool:
    p = Path(path)
    name = p.name.lower().rstrip("/")
    if name.endswith(SUFFIXES):
        return True
    # an OME-Zarr folder without the suffix
    return p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zattrs").is_file())


def get_reader(path):
    """npe2 ``get_reader``: a reader function for one supported path, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = str(path)
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
    out = layers.image_layers(pyramid, name=pyramid.name or Path(path).name, source=path)
    if Path(path).is_dir():
        out += _ome_zarr_labels(Path(path), pyramid)
    return out


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
            datasets = attrs["multiscales"][0]["datasets"]
            arrays = [da.from_zarr(group[d["path"]]) for d in datasets]
        except Exception as exc:
            log.warning("skipping labels %r in %s: %s", name, path, exc)
            continue
        arrays = [_spatial_only(a, pyramid.spatial_ndim) for a in arrays]
        # labels may be stored coarser than the image: their level = image shape / labels shape
        level = tuple(float(s) / float(n) for s, n in zip(pyramid.shape, arrays[0].shape))
        colors = _label_colors(attrs)
        out.append(layers.labels_layer(
            arrays, level=level, pixel_size=pyramid.pixel_size, unit=pyramid.unit, name=f"{name}",
            class_colors=colors, extra_meta={"source": str(path / "labels" / name)},
        ))
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
