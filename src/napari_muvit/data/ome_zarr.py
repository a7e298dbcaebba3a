"""OME-Zarr v0.4 (zarr format 2) and v0.5 (zarr format 3) multiscale images, read with zarr directly.

Factors, pixel size, unit and translation come from the ``multiscales`` metadata (``axes`` and the
per-dataset and multiscale-wide ``coordinateTransformations``, read by `geometry.read_ome_transforms`);
array shapes are checked against them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from .array_pyramids import check_levels_ascending, factors_from_shapes, is_brightfield_rgb
from .geometry import has_transform, read_ome_transforms
from .pyramid import Level, Pyramid


def ome_attrs(group: zarr.Group) -> dict:
    """The OME metadata dict of a group: ``attrs['ome']`` (v0.5) or the attrs themselves (v0.4)."""
    attrs = dict(group.attrs)
    return dict(attrs["ome"]) if "ome" in attrs else attrs


def open_ome_zarr(path: Path, name: str = "image", strict: bool = False) -> Pyramid:
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for "not a group"
        if type(exc).__name__ == "JSONDecodeError":
            meta = next((f for f in ("zarr.json", ".zattrs", ".zgroup") if (Path(path) / f).is_file()), "zarr.json")
            raise ValueError(
                f"{str(Path(path) / meta)!r} is not valid JSON ({exc}); the image's metadata is truncated or damaged."
            ) from exc
        raise ValueError(f"{str(path)!r} is not a readable OME-Zarr image ({exc}).") from exc
    return open_ome_zarr_group(group, name=name, strict=strict)


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


def _dataset_array(group, path, k: int):
    try:
        arr = group[str(path)]
    except Exception as exc:
        where = f"{str(group.store_path).rstrip('/')}/{path}"
        json_error = type(exc).__name__ == "JSONDecodeError"
        what = "its metadata file (zarr.json or .zarray) is not valid JSON" if json_error else type(exc).__name__
        raise ValueError(
            f"OME-Zarr level {k} names dataset {str(path)!r} ({where}), which is not a readable array in this "
            f"image ({what}); the file is incomplete or damaged."
        ) from exc
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        raise ValueError(f"OME-Zarr level {k} names {str(path)!r}, which is a group, not an array.")
    return arr


def _check_level_shape(k: int, shape0, shape, factor, spatial_idx, scale_k, scale_0, layout: str) -> None:
    """A level's shape must be what its scale says: ``floor`` or ``ceil`` of level 0's by the factor."""
    for i, f in zip(spatial_idx, factor):
        if shape[i] not in (shape0[i] // f, -(-shape0[i] // f)):
            expected = sorted({max(1, shape0[i] // f), -(-shape0[i] // f)})
            raise ValueError(
                f"OME-Zarr level {k} has shape {tuple(shape)} but its scale {scale_k} ({f}x level 0's "
                f"{scale_0}) needs {' or '.join(map(str, expected))} pixels along {layout[i]}: the dataset paths "
                "point at the wrong arrays (swapped or mismatched levels)."
            )


def open_ome_zarr_group(group: zarr.Group, name: str = "image", strict: bool = False) -> Pyramid:
    """`Pyramid` from an opened zarr group holding OME ``multiscales`` metadata.

    Singleton ``t`` and ``z`` axes (a 5-D ``t,c,z,y,x`` image with ``t = z = 1``, bioformats2raw's
    layout) are read at index 0, so such an image is 2-D; a ``z`` axis with more than one plane stays 3-D.
    Factors come from the scales (level / level 0) and every level's shape is checked against them.
    ``Pyramid.translation`` is the level-0 ``translation`` (dataset then multiscale-wide transforms).
    """
    meta = ome_attrs(group)
    multiscales = meta.get("multiscales")
    if not multiscales and "bioformats2raw.layout" in meta and "0" in group:
        # bioformats2raw / NGFF converter layout: the first image lives in the "0" sub-group
        return open_ome_zarr_group(group["0"], name=name, strict=strict)
    if not multiscales:
        raise ValueError("this zarr folder has no OME 'multiscales' metadata, so it is not an OME-Zarr image.")
    ms = multiscales[0]
    datasets = ms.get("datasets") or []
    if not datasets:
        raise ValueError("the OME-Zarr image lists no datasets (empty pyramid).")
    arrays = [_dataset_array(group, d.get("path"), k) for k, d in enumerate(datasets)]
    ndim = arrays[0].ndim
    if "axes" in ms:
        if len(ms["axes"]) != ndim:
            raise ValueError(f"OME-Zarr axes {ms['axes']!r} name {len(ms['axes'])} axes but level 0 has {ndim}.")
        layout, units = _layout(ms["axes"])
    else:  # v0.1-v0.3 without axes: t c z y x
        layout, units = "tczyx"[-ndim:], [None] * 3
    if "z" in layout and arrays[0].shape[layout.index("z")] == 1:
        # a single plane: read z at index 0 (like t) and treat the image as 2-D
        units = units[-2:]
        layout = layout.replace("z", "t")
    spatial_idx = [i for i, a in enumerate(layout) if a in "zyx"]
    glob = ms.get("coordinateTransformations")
    transforms = [read_ome_transforms(d.get("coordinateTransformations"), glob, ndim) for d in datasets]
    scales = [sc for sc, _ in transforms]
    has_scale = any(has_transform(d.get("coordinateTransformations"), "scale") for d in datasets) or has_transform(
        glob, "scale")
    levels = []
    for k, (arr, sc) in enumerate(zip(arrays, scales)):
        if arr.ndim != ndim:
            raise ValueError(f"OME-Zarr level {k} has {arr.ndim} dimensions but level 0 has {ndim}.")
        if has_scale:
            ratio = sc[spatial_idx] / scales[0][spatial_idx]
            factor = tuple(max(1, int(round(r))) for r in ratio)
            # writers such as ome-zarr-py store shape ratios (e.g. 600/37 = 16.2) for odd sizes
            shape_ratio = np.array([arrays[0].shape[i] / arr.shape[i] for i in spatial_idx])
            exact = np.all(np.abs(ratio - np.asarray(factor)) <= 1e-3 * ratio)
            ratio_of_shapes = np.all(np.abs(ratio - shape_ratio) <= 1e-3 * ratio)
            if not (exact or ratio_of_shapes) or np.any(ratio < 0.999):
                raise ValueError(
                    f"OME-Zarr level {k} has scale {sc[spatial_idx].tolist()}, not a whole-number multiple of "
                    f"level 0's {scales[0][spatial_idx].tolist()}."
                )
            if factor[-1] != factor[-2]:
                raise ValueError(
                    f"OME-Zarr level {k} is downsampled {factor[-2]}x in Y but {factor[-1]}x in X; levels "
                    "must keep the aspect ratio."
                )
            _check_level_shape(k, arrays[0].shape, arr.shape, factor, spatial_idx,
                               sc[spatial_idx].tolist(), scales[0][spatial_idx].tolist(), layout)
        else:
            factor = factors_from_shapes([arrays[0].shape[i] for i in spatial_idx],
                                         [arr.shape[i] for i in spatial_idx], k)
        levels.append(Level(arr, layout, factor))
    check_levels_ascending([lv.factor for lv in levels])
    pixel = scales[0][spatial_idx]
    translation = transforms[0][1][spatial_idx]
    unit = next((u for u in units if u), None)
    omero = meta.get("omero") or {}
    channels = omero.get("channels") if isinstance(omero, dict) else None
    n_c = arrays[0].shape[layout.index("c")] if "c" in layout else 1
    channel_names = colors = None
    if isinstance(channels, list) and len(channels) == n_c:
        channel_names = [str(c.get("label") or f"channel {i}") if isinstance(c, dict) else f"channel {i}"
                         for i, c in enumerate(channels)]
        colors = [c.get("color") if isinstance(c, dict) else None for c in channels]
    rgb = "c" in layout and is_brightfield_rgb(n_c, arrays[0].dtype, channel_names, colors)
    pyr = Pyramid(
        levels,
        name=name,
        pixel_size=tuple(pixel.tolist()) if has_scale else None,
        unit=unit,
        channel_names=channel_names,
        rgb=rgb,
        translation=tuple(translation.tolist()),
        strict=strict,
    )
    pyr.metadata = meta
    return pyr
