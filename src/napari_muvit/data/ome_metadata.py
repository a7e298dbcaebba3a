"""OME-NGFF 0.5 metadata that napari-muvit writes: the one builder of ``multiscales`` and ``image-label``.

Every OME-Zarr this project writes (prediction stores `engine.store`, synthetic slides
`data.synthetic_writer`, labels saved from napari `widgets._writer`) builds its ``ome`` attributes here, with
the per-level ``coordinateTransformations`` of `data.geometry.ome_transforms`, so the world convention and
the NGFF layout are written one way. Reading is `data.ome_zarr` / `data.geometry.read_ome_transforms`.

```
ome_attributes(multiscale(...), omero=..., image_label=image_label(...))
-> {"version": "0.5", "multiscales": [{"name", "axes", "datasets", "type"?}], "omero"?, "image-label"?}
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .geometry import ome_transforms

NGFF_VERSION = "0.5"


def ome_axes(ndim: int = 2, unit: str | None = None, channel: bool = False) -> list[dict]:
    """NGFF ``axes``: an optional channel axis ``c``, then ``ndim`` space axes (``y, x`` or ``z, y, x``) with
    ``unit`` (e.g. ``"micrometer"``; None = no unit: level-1 pixels)."""
    if not 1 <= int(ndim) <= 3:
        raise ValueError(f"{ndim} spatial axes cannot be written; use 2 (y, x) or 3 (z, y, x).")
    space = {"type": "space"} | ({"unit": unit} if unit else {})
    axes = [{"name": n} | space for n in "zyx"[-int(ndim):]]
    return ([{"name": "c", "type": "channel"}] if channel else []) + axes


def multiscale(
    name: str,
    factors: Sequence,
    *,
    pixel_size=None,
    unit: str | None = None,
    origin_world=(0.0, 0.0),
    translation=None,
    channel: bool = False,
    paths: Sequence[str] | None = None,
    kind: str | None = None,
) -> dict:
    """One NGFF ``multiscales`` entry for arrays whose level ``k`` has pixels of factor ``factors[k]``.

    factors: downsample factor of each stored level, finest first (scalar or one per spatial axis).
    pixel_size, translation: the slide's level-1 pixel size and own translation (physical; None/0 = the
        frame is level-1 pixels); origin_world: world px where pixel 0 of every level starts (a region's
        corner; 0 for a whole slide). Its length sets the number of spatial axes.
    channel: a leading channel axis ``c`` (scale 1, translation 0).
    paths: the arrays' names (default ``"0", "1", ...``); kind: the optional ``type`` (``"mean"``, ``"mode"``).
    Each dataset's transforms are `geometry.ome_transforms` (``scale = f * p``,
    ``translation = T + (origin + (f - 1) / 2) * p``).
    """
    ndim = len(origin_world)
    paths = [str(k) for k in range(len(factors))] if paths is None else [str(p) for p in paths]
    if len(paths) != len(factors):
        raise ValueError(f"{len(paths)} array paths given for {len(factors)} levels; give one path per level.")
    entry = {
        "name": name,
        "axes": ome_axes(ndim, unit, channel),
        "datasets": [
            {"path": p, "coordinateTransformations": ome_transforms(f, pixel_size, origin_world, translation, channel)}
            for p, f in zip(paths, factors)
        ],
    }
    if kind is not None:
        entry["type"] = kind
    return entry


def image_label(
    colors: Mapping[int, Sequence[int]] | None = None,
    classes: Mapping[int, str] | None = None,
    source: str | None = None,
) -> dict:
    """NGFF ``image-label``: ``colors`` label value -> 0-255 RGBA, ``classes`` label value -> class name
    (written as ``properties[].class``), ``source`` the image relative to the labels array (``"../../"``).
    Absent (None) parts are left out; values are written in the mapping's order."""
    out: dict = {"version": NGFF_VERSION}
    if colors is not None:
        out["colors"] = [{"label-value": int(v), "rgba": list(c)} for v, c in colors.items()]
    if classes is not None:
        out["properties"] = [{"label-value": int(v), "class": name} for v, name in classes.items()]
    if source is not None:
        out["source"] = {"image": source}
    return out


def ome_attributes(multiscales: dict | Sequence[dict], *, omero: dict | None = None,
                   image_label: dict | None = None) -> dict:
    """The group's ``ome`` attribute: ``{"version": "0.5", "multiscales": [...], "omero"?, "image-label"?}``."""
    entries = [multiscales] if isinstance(multiscales, dict) else list(multiscales)
    out: dict = {"version": NGFF_VERSION, "multiscales": entries}
    if omero is not None:
        out["omero"] = omero
    if image_label is not None:
        out["image-label"] = image_label
    return out


def labels_group_attributes(names: Sequence[str]) -> dict:
    """The ``labels`` group's ``ome`` attribute listing its label images."""
    return {"version": NGFF_VERSION, "labels": [str(n) for n in names]}
