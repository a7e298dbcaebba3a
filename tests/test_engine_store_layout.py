"""Whole-slide output stores: world positions match the slide's (with and without an OME translation), and a
1,000,000^2 px slide starts, reports progress and cancels within bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

from napari_muvit.data import open_pyramid
from napari_muvit.engine.predict import predict
from napari_muvit.engine.recipe import Recipe
from napari_muvit.engine.testing import PixelSegmenter, random_slide

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _ome_slide(path, img, pixel_size, translation):
    """A one-level OME-Zarr v0.5 slide (c, y, x) with a scale and a translation, written with zarr directly."""
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.create_array("0", data=img[None].astype(np.float32), chunks=(1, 64, 64), dimension_names=["c", "y", "x"])
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, *pixel_size]},
            {"type": "translation", "translation": [0.0, *translation]}]}]}]}
    return path


def _physical(transforms, index_yx):
    """Physical position of the centre of pixel ``index_yx`` of an OME dataset (spatial axes y, x)."""
    scale = next(t["scale"] for t in transforms if t["type"] == "scale")[-2:]
    trans = next(t["translation"] for t in transforms if t["type"] == "translation")[-2:]
    return np.asarray(index_yx, float) * scale + trans


@pytest.mark.parametrize("level", [1, 4])
def test_output_pixels_sit_where_the_slide_pixels_are(tmp_path, level):
    img = random_slide((192, 160), seed=1)
    slide = _ome_slide(tmp_path / "slide.zarr", img, pixel_size=(0.5, 0.25), translation=(100.0, -40.0))
    pyr = open_pyramid(str(slide))
    assert tuple(pyr.translation) == (100.0, -40.0)
    region = (36, 180, 24, 150)
    res = predict(Recipe(source=str(slide), out=str(tmp_path / "p.zarr"), tile=32, overlap=8, region=region,
                         output_level=level, normalization={"policy": "none"}), model=PixelSegmenter(), pyramid=pyr)
    g = zarr.open_group(str(res.path), mode="r")
    out_t = g.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    lab_t = g["labels/prediction"].attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    for world_yx in [(36, 24), (100, 77), (179, 149)]:
        # the slide's own transform places world pixel (y, x) at translation + (y, x) * pixel size
        slide_pos = _physical([{"type": "scale", "scale": [0.5, 0.25]},
                               {"type": "translation", "translation": [100.0, -40.0]}], world_yx)
        out_idx = np.asarray(world_yx) // level
        centre_world = out_idx * level + (level - 1) / 2  # the output pixel's centre in world px
        expected = _physical([{"type": "scale", "scale": [0.5, 0.25]},
                              {"type": "translation", "translation": [100.0, -40.0]}], centre_world)
        np.testing.assert_allclose(_physical(out_t, out_idx), expected, atol=1e-9)
        np.testing.assert_allclose(_physical(lab_t, out_idx), expected, atol=1e-9)
        if level == 1:  # same pixel, same place, as napari-muvit and ome-zarr-py compute it
            np.testing.assert_allclose(_physical(out_t, out_idx), slide_pos, atol=1e-9)
    # a reader that ignores translations (napari-ome-zarr) still aligns: array index * level = world index
    lab = g["labels/prediction/0"][:]
    assert lab.shape == (192 // level, 160 // level)
    ys, xs = np.nonzero(lab)
    assert ys.min() == 36 // level and ys.max() == 179 // level
    assert xs.min() == 24 // level and xs.max() == 149 // level


SCALE_RUN = r"""
import json, resource, sys
import dask.array as da
import torch
torch.set_num_threads(1)
from napari_muvit.data import open_pyramid
from napari_muvit.engine.predict import predict
from napari_muvit.engine.recipe import Recipe
from napari_muvit.engine.testing import ConstantSegmenter

side = 1_000_000
levels = [da.zeros((1, side, side), dtype="float32", chunks=(1, 4096, 4096)),
          da.zeros((1, side // 4, side // 4), dtype="float32", chunks=(1, 4096, 4096))]
pyr = open_pyramid(levels)
seen = []
def progress(done, total):
    seen.append((done, total))
res = predict(Recipe(out=sys.argv[1], tile=256, overlap=32, batch_size=8, normalization={"policy": "none"}),
              model=ConstantSegmenter(crop=256), pyramid=pyr, progress=progress, cancel=lambda: len(seen) > 4)
print(json.dumps({"seen": seen, "cancelled": res.cancelled, "total": res.tiles_total,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_a_million_pixel_square_slide_starts_reports_and_cancels_in_bounded_memory(tmp_path):
    """No per-tile Python list and no per-pixel array of the slide: ~20 M tiles cost a few hundred MB at most."""
    out = tmp_path / "big.zarr"
    proc = subprocess.run([sys.executable, "-c", SCALE_RUN, str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    tiles = (-(-1_000_000 // 224)) ** 2
    assert report["total"] == tiles and report["cancelled"]
    assert report["seen"][0] == [0, tiles] and report["seen"][-1][0] == 32  # 4 batches of 8 reported, then stopped
    assert report["peak_rss_mb"] < 2000, report["peak_rss_mb"]
    g = zarr.open_group(str(out), mode="r")
    assert g["0"].shape == (3, 1_000_000, 1_000_000) and g.attrs["napari_muvit"]["complete"] is False
    with np.load(out / ".muvit" / "state.npz") as z:
        assert z["state"].shape == (4465, 4465) and int((z["state"] == 1).sum()) == 32  # kept for --resume
