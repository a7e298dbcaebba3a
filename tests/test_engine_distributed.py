"""A 2-process local dask cluster writes the same store as the in-process run."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_muvit.engine.predict import predict
from napari_muvit.engine.recipe import Recipe
from napari_muvit.engine.testing import random_slide, tiny_segmenter

pytest.importorskip("distributed")


def test_two_worker_cluster_matches_single_process(tmp_path):
    from napari_muvit.model import save_model

    torch.set_num_threads(1)
    save_model(tiny_segmenter(), tmp_path / "model")
    tifffile.imwrite(tmp_path / "slide.tif", (random_slide((200, 176), seed=11) * 255).astype(np.uint8))
    base = Recipe(source=str(tmp_path / "slide.tif"), model=str(tmp_path / "model"), overlap=8, batch_size=4,
                  region=(8, 200, 0, 170))
    single = predict(base.replace(out=str(tmp_path / "single.zarr")))
    seen = []
    multi = predict(base.replace(out=str(tmp_path / "multi.zarr"), workers=2), progress=lambda d, t: seen.append(d))
    assert single.complete and multi.complete and multi.tiles_done == single.tiles_done == 8 * 8
    assert seen[-1] == 64
    a, b = zarr.open_group(str(single.path), mode="r"), zarr.open_group(str(multi.path), mode="r")
    for key in ("0", "labels/prediction/0"):
        np.testing.assert_array_equal(a[key][:], b[key][:])
    assert (single.path / "tiles.csv").read_text() == (multi.path / "tiles.csv").read_text()
    assert b.attrs["napari_muvit"]["complete"] is True
