"""OME-Zarr v0.4 (zarr format 2) and v0.5 (zarr format 3) multiscale images, read with zarr directly.

Factors, pixel size and unit come from the ``multiscales`` metadata (``axes`` and the per-dataset
``coordinateTransformations``), not from array shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from .pyramid import Level, Pyramid
from .readers import check_levels_ascending, factors_from_shapes


def ome_attrs(group: zarr.Group) -> dict:
    """The OME metadata dict of a group: ``attrs['ome']`` (v0.5) or the attrs themselves (v0.4)."""
    attrs = dict(group.attrs)
    return dict(attrs["ome"]) if "ome" in attrs else attrs


def open_ome_zarr(path: Path, name: str = "image") -> Pyramid:
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for "not a group"
        raise ValueError(f"{str(path)!r} is not a readable OME-Zarr image ({exc}).") from exc
    return open_ome_zarr_group(group, name=name)


def _layout(axes_meta: list) -> tuple[str, list[str | None]]:
    """Axis letters (``tczyx``) and units from OME ``axes`` (v0.4+ dicts or v0.3 strings)."""
    names, types, units = [], [], []
    for ax in axes_meta:
        if isinstance(ax, str):
            ax = {"name": ax}
        nm = str(ax.get("name", "")).lower()
        tp = ax.get("type") or {"t": "time", "c": "channel"}.get(nm, "space")
        names.append(nm)
        types.append(tp)
        units.append(ax.get("unit"))
    space = [i for i, t in enumerate(types) if t == "space"]
    if len(space) not in (2, 3):
        raise ValueError(f"OME-Zarr axes {names} must contain 2 or 3 spatial axes (y, x or z, y, x).")
    letters = []
    space_letters = "zyx"[-len(space):]
    for i, t in enumerate(types):
        if t == "space":
            letters.append(space_letters[space.index(i)])
        elif t == "time":
            letters.append("t")
        else:  # channel or a custom type: treated as channels
            letters.append("c")
    if letters.count("c") > 1 or letters.count("t") > 1:
        raise ValueError(f"OME-Zarr axes {names} have more than one channel or time axis.")
    return "".join(letters), [units[i] for i in space]


def _scale(transforms: list | None, ndim: int) -> np.ndarray:
    scale = np.ones(ndim)
    for tr in transforms or []:
        if tr.get("type") == "scale" and "scale" in tr:
            scale = scale * np.asarray(tr["scale"], dtype=np.float64)
    return scale


def open_ome_zarr_group(group: zarr.Group, name: str = "image") -> Pyramid:
    """`Pyramid` from an opened zarr group holding OME ``multiscales`` metadata."""
    meta = ome_attrs(group)
    multiscales = meta.get("multiscales")
    if not multiscales and "bioformats2raw.layout" in meta and "0" in group:
        # bioformats2raw / NGFF converter layout: the first image lives in the "0" sub-group
        return open_ome_zarr_group(group["0"], name=name)
    if not multiscales:
        raise ValueError("this zarr folder has no OME 'multiscales' metadata, so it is not an OME-Zarr image.")
    ms = multiscales[0]
    datasets = ms.get("datasets") or []
    if not datasets:
        raise ValueError("the OME-Zarr image lists no datasets (empty pyramid).")
    arrays = [group[d["path"]] for d in datasets]
    ndim = arrays[0].ndim
    if "axes" in ms:
        layout, units = _layout(ms["axes"])
    else:  # v0.1-v0.3 without axes: t c z y x
        layout, units = "tczyx"[-ndim:], [None] * 3
    spatial_idx = [i for i, a in enumerate(layout) if a in "zyx"]
    global_scale = _scale(ms.get("coordinateTransformations"), ndim)
    scales = [_scale(d.get("coordinateTransformations"), ndim) for d in datasets]
    levels = []
    for k, (arr, sc) in enumerate(zip(arrays, scales)):
        if arr.ndim != ndim:
            raise ValueError(f"OME-Zarr level {k} has {arr.ndim} dimensions but level 0 has {ndim}.")
        if any(d.get("coordinateTransformations") for d in datasets):
            ratio = sc[spatial_idx] / scales[0][spatial_idx]
            factor = tuple(int(round(r)) for r in ratio)
            # writers such as ome-zarr-py store shape ratios (e.g. 600/37 = 16.2) for odd sizes
            shape_ratio = np.array([arrays[0].shape[i] / arr.shape[i] for i in spatial_idx])
            shape_ok = np.all(np.abs(ratio - shape_ratio) <= 1e-3 * ratio) and all(
                arr.shape[i] in (arrays[0].shape[i] // f, -(-arrays[0].shape[i] // f))
                for i, f in zip(spatial_idx, factor)
            )
            exact = np.all(np.abs(ratio - np.asarray(factor)) <= 1e-3 * ratio)
            if not (exact or shape_ok) or min(factor) < 1:
                raise ValueError(
                    f"OME-Zarr level {k} has scale {sc[spatial_idx].tolist()}, not a whole-number multiple of "
                    f"level 0's {scales[0][spatial_idx].tolist()}."
                )
            if factor[-1] != factor[-2]:
                raise ValueError(
                    f"OME-Zarr level {k} is downsampled {factor[-2]}x in Y but {factor[-1]}x in X; levels "
                    "must keep the aspect ratio."
                )
        else:
            factor = factors_from_shapes([arrays[0].shape[i] for i in spatial_idx],
                                         [arr.shape[i] for i in spatial_idx], k)
        levels.append(Level(arr, layout, factor))
    check_levels_ascending([lv.factor for lv in levels])
    pixel = (scales[0] * global_scale)[spatial_idx]
    has_scale = any(d.get("coordinateTransformations") for d in datasets)
    unit = next((u for u in units if u), None)
    channel_names = None
    omero = meta.get("omero") or {}
    if omero.get("channels"):
        channel_names = [str(c.get("label", f"channel {i}")) for i, c in enumerate(omero["channels"])]
    n_c = arrays[0].shape[layout.index("c")] if "c" in layout else 1
    if channel_names and len(channel_names) != n_c:
        channel_names = None
    pyr = Pyramid(
        levels,
        name=name,
        pixel_size=tuple(pixel.tolist()) if has_scale else None,
        unit=unit,
        channel_names=channel_names,
        rgb=False,
    )
    pyr.metadata = meta
    return pyr
