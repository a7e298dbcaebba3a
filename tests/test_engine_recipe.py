"""Recipe round-trips and validation, device policy, tile grid geometry and blend window, downsampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_muvit.engine.device import (
    auto_batch_size,
    configure_threads,
    is_oom,
    resolve_device,
    resolve_precision,
)
from napari_muvit.engine.downsample import downsample_mean, downsample_mode
from napari_muvit.engine.grid import TileGrid, window_1d
from napari_muvit.engine.recipe import Recipe, parse_region


def test_recipe_yaml_json_round_trip(tmp_path):
    r = Recipe(source="s.zarr", model="m", levels="1,8,32", region="0:512,256:1024", tile=256, overlap=32,
               normalization={"policy": "fixed", "low": [0], "high": [255]}, batch_size=4, out="o.zarr")
    assert r.levels == (1, 8, 32) and r.region == (0, 512, 256, 1024)
    for name in ("r.yaml", "r.json"):
        path = r.save(tmp_path / name)
        back = Recipe.load(path)
        assert back == r
    assert Recipe.from_json(r.to_json()).to_dict() == r.to_dict()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"levels": "1,3,8"}, "not nested"),
        ({"levels": "8,1"}, "ascending"),
        ({"region": "0:10"}, "y0:y1,x0:x1"),
        ({"region": (5, 5, 0, 10)}, "empty"),
        ({"tile": 100, "overlap": 60}, "more than half"),
        ({"overlap": 3}, "even"),
        ({"device": "tpu"}, "not one of"),
        ({"precision": "int8"}, "precision"),
        ({"batch_size": 0}, "batch size"),
        ({"resume": True, "overwrite": True}, "exclude"),
        ({"workers": 2, "scheduler": "tcp://x:1"}, "not both"),
    ],
)
def test_recipe_rejects_bad_values_with_one_sentence(kwargs, words):
    with pytest.raises(ValueError) as err:
        Recipe(**kwargs)
    msg = str(err.value)
    assert words in msg and "\n" not in msg


def test_recipe_unknown_key():
    with pytest.raises(ValueError, match="unknown recipe key"):
        Recipe.from_dict({"sauce": 1})


def test_parse_region_all_is_whole_slide():
    assert parse_region("all") is None
    assert parse_region("10:20,30:45") == (10, 20, 30, 45)


def test_device_and_precision_policy():
    dev = resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else dev.type)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_precision("auto", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_configure_threads_leaves_a_core():
    before = torch.get_num_threads()
    try:
        n = configure_threads()
        import os

        cores = len(os.sched_getaffinity(0))
        assert n == max(1, cores - 1) and torch.get_num_threads() == n
        assert configure_threads(max_threads=1) == 1
    finally:
        torch.set_num_threads(before)


def test_auto_batch_size_halves_on_oom():
    calls = []

    def run(b):
        calls.append(b)
        if b > 32:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    assert auto_batch_size(run, torch.device("cuda"), start=4) == 16  # 32 fits, half kept as head-room
    assert calls == [4, 8, 16, 32, 64]
    assert auto_batch_size(run, torch.device("cpu")) == 8
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory")) and not is_oom(ValueError("x"))


def test_grid_owned_chunks_tile_the_region_once():
    g = TileGrid((10, 200, 20, 250), tile=32, overlap=8)
    assert g.stride == 24 and g.grid_shape == (8, 10)
    cover = np.zeros(g.shape, int)
    for i in range(8):
        for j in range(10):
            a0, a1, b0, b1 = g.owned(i, j)
            cover[a0:a1, b0:b1] += 1
            oy, ox = g.tile_origin(i, j)
            # the owned box lies inside the tile's crop, o/2 from its edges
            assert oy - 10 + 4 == a0 and ox - 20 + 4 == b0
    assert cover.min() == 1 and cover.max() == 1


def test_blend_window_is_a_partition_of_unity():
    S, o = 32, 8
    w = window_1d(S, o)
    assert w.min() > 0 and w.max() == 1
    s = S - o
    np.testing.assert_allclose(w[s:] + w[:o], 1.0, atol=1e-12)
    np.testing.assert_array_equal(window_1d(16, 0), np.ones(16))


def test_blend_of_equal_predictions_is_that_prediction():
    g = TileGrid((0, 100, 0, 100), tile=32, overlap=12)
    preds = {n: np.full((2, 32, 32), 0.25, np.float32) for n in g.neighbours(1, 1)}
    out = g.blend(1, 1, preds)
    assert out.shape == (2, 20, 20)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    # a missing neighbour (background) leaves the rest renormalised
    del preds[(0, 0)]
    np.testing.assert_allclose(g.blend(1, 1, preds), 0.25, atol=1e-6)


def test_downsample_mean_and_mode():
    a = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    np.testing.assert_allclose(downsample_mean(a)[0], [[2.5, 4.5], [10.5, 12.5]])
    odd = np.ones((3, 5), np.float32)
    assert downsample_mean(odd).shape == (2, 3) and np.all(downsample_mean(odd) == 1)
    lab = np.array([[1, 1, 2, 3], [2, 1, 3, 3], [0, 0, 4, 5]], np.uint8)
    np.testing.assert_array_equal(downsample_mode(lab), [[1, 3], [0, 4]])
