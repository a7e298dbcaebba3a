"""'foreground tiles only' keeps tiles that hold sparse cells: one or two cells in a field of glass."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_muvit.data import foreground, foreground_mask, open_pyramid

CELLS = ((400, 400), (406, 393))  # two cells 7 px across, alone in the slide's lower right quarter


def _sparse_slide() -> np.ndarray:
    """Fluorescence-like 512 x 512 slide: dark glass, a block of tissue (it sets the threshold), two cells."""
    rng = np.random.default_rng(0)
    img = 10 + rng.normal(0, 2, (512, 512))
    img[:200, :200] = 200
    yy, xx = np.mgrid[:512, :512]
    for cy, cx in CELLS:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = 180
    return img.astype(np.float32)


def test_two_cells_in_glass_are_tissue(monkeypatch):
    pyr = open_pyramid(_sparse_slide(), min_size=64)
    mask, level = foreground_mask(pyr)
    assert level == 8 and mask.shape == (64, 64)
    for cy, cx in CELLS:
        assert mask[cy // 8, cx // 8], (cy, cx)
    assert mask[:25, :25].all()  # the tissue block
    rest = mask.copy()
    rest[:26, :26] = False
    rest[49:52, 48:51] = False  # the mask pixels under the two cells
    assert not rest.any()  # glass (with its noise) stays background
    monkeypatch.setattr(foreground, "STRIP_PX", 4 * 4 * 64 * 3)  # strips of 3 mask rows: the same mask
    np.testing.assert_array_equal(foreground_mask(pyr)[0], mask)
    monkeypatch.setattr(foreground, "FINER", 1)  # the mask level alone averages the cells away
    coarse, _ = foreground_mask(pyr)
    assert not any(coarse[cy // 8, cx // 8] for cy, cx in CELLS) and coarse[:25, :25].all()


def test_foreground_run_computes_the_tile_with_two_cells(tmp_path):
    torch = pytest.importorskip("torch")
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.testing import ConstantSegmenter

    torch.set_num_threads(1)
    res = predict(Recipe(out=str(tmp_path / "f.zarr"), tile=32, overlap=8, foreground=True,
                         normalization={"policy": "none"}),
                  model=ConstantSegmenter(), pyramid=open_pyramid(_sparse_slide(), min_size=64))
    rows = list(csv.DictReader(open(res.path / "tiles.csv")))
    assert res.tiles_background > 0.5 * res.tiles_total  # most of the slide is glass and skipped
    import zarr

    labels = zarr.open_group(str(res.path), mode="r")["labels/prediction/0"][:]
    for cy, cx in CELLS:
        assert labels[cy, cx] != 0, (cy, cx)  # predicted: its tile was computed, not skipped
    assert labels[300, 100] == 0 and labels[100, 300] == 0  # glass tiles were skipped
    assert sum(r["status"] == "done" for r in rows) == res.tiles_done
