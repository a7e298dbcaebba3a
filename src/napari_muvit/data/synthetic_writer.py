"""Write a synthetic slide as OME-Zarr v0.5 (zarr format 3), chunk by chunk in bounded memory.

Level 0 of the image and of ``labels/ground_truth`` is rendered one chunk at a time; each coarser
level is built from the previous one read back in ``2*chunk`` blocks (image: 2x2 mean, labels: 2x2
max so small cells stay visible), so memory never depends on the slide size.
The writer knows nothing of the generator: `synthetic.write_synthetic_slide` hands it the window renderer,
the class names and colours and the ``muvit`` attribute that records how the slide was made.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import zarr

from .ome_metadata import multiscale

MIN_LEVEL_SIZE = 256


def _level_shapes(size: int) -> list[int]:
    shapes = [size]
    while shapes[-1] >= MIN_LEVEL_SIZE:
        shapes.append(shapes[-1] // 2)
    return shapes


def _multiscales(n_levels: int, name: str) -> list[dict]:
    # no unit and no pixel size: a synthetic pixel has no physical size
    return [multiscale(name, [2**k for k in range(n_levels)], paths=[f"s{k}" for k in range(n_levels)], kind="mean")]


def _create_levels(group: zarr.Group, sizes: list[int], chunk: int) -> list:
    return [
        group.create_array(f"s{k}", shape=(n, n), chunks=(min(chunk, n), min(chunk, n)), dtype=np.uint8,
                           fill_value=0, dimension_names=["y", "x"])
        for k, n in enumerate(sizes)
    ]


def _downsample_into(src, dst, chunk: int, reduce: str) -> None:
    """Fill ``dst`` (half the size of ``src``) block by block from ``src`` (2x2 mean or max)."""
    n = dst.shape[0]
    for y in range(0, n, chunk):
        for x in range(0, n, chunk):
            h, w = min(chunk, n - y), min(chunk, n - x)
            block = src[2 * y: 2 * (y + h), 2 * x: 2 * (x + w)].reshape(h, 2, w, 2)
            if reduce == "mean":
                out = np.floor(block.mean(axis=(1, 3), dtype=np.float32) + 0.5).astype(np.uint8)
            else:
                out = block.max(axis=(1, 3))
            dst[y: y + h, x: x + w] = out


def write_ome_zarr_slide(path, size: int, *, render, names: list[str], colors: list[list[int]],
                         generator: dict, chunk: int, overwrite: bool, progress=None) -> Path:
    """Write the ``size x size`` slide whose world window ``(y0, x0, (h, w))`` is ``render(y0, x0, (h, w))
    -> (image (h, w) uint8, labels (h, w) uint8)``; label value ``k + 1`` is ``names[k]`` in ``colors[k]``
    (0-255 RGBA); ``generator`` is stored as the ``muvit`` attribute of the image and of its labels."""
    path = Path(path)
    if int(chunk) != chunk or chunk < 64:
        raise ValueError(f"chunk size {chunk!r} must be a whole number of pixels >= 64, e.g. 1024.")
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{str(path)!r} already exists; choose another path or pass --overwrite.")
        if path.is_dir() and not any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zattrs")):
            # --overwrite replaces an earlier slide, never an arbitrary folder
            raise ValueError(f"{str(path)!r} is a folder but not a zarr store; refusing to replace it.")
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    sizes = _level_shapes(size)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update({"ome": {"version": "0.5", "multiscales": _multiscales(len(sizes), "synthetic slide")},
                       "muvit": generator})
    image = _create_levels(root, sizes, chunk)
    labels_root = root.create_group("labels")
    labels_root.attrs.update({"ome": {"version": "0.5", "labels": ["ground_truth"]}})
    gt = labels_root.create_group("ground_truth")
    gt.attrs.update({
        "ome": {
            "version": "0.5",
            "multiscales": _multiscales(len(sizes), "ground_truth"),
            "image-label": {
                "version": "0.5",
                # value k + 1 = class k, 0 = unlabelled: the values, names and colours of a prediction store
                "colors": [{"label-value": k + 1, "rgba": colors[k]} for k in range(len(names))],
                "properties": [{"label-value": k + 1, "class": nm} for k, nm in enumerate(names)],
                "source": {"image": "../../"},
            },
        },
        "muvit": generator,
    })
    labels = _create_levels(gt, sizes, chunk)
    n_chunks = (-(-size // chunk)) ** 2
    done = 0
    for y in range(0, size, chunk):
        for x in range(0, size, chunk):
            h, w = min(chunk, size - y), min(chunk, size - x)
            img, lab = render(y, x, (h, w))
            image[0][y: y + h, x: x + w] = img
            labels[0][y: y + h, x: x + w] = lab
            done += 1
            if progress is not None:
                progress(done, n_chunks)
    for k in range(1, len(sizes)):
        _downsample_into(image[k - 1], image[k], chunk, "mean")
        _downsample_into(labels[k - 1], labels[k], chunk, "max")
    return path
