"""Non-concentric evaluation crops: true world boxes of shifted context crops vs naive concentric boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_muvit.data import open_pyramid
from napari_muvit.engine.training.offsets import concentric_boxes, evaluate_offset_slide, offset_crops

W = 512
LEVELS, SIZE = (1, 4, 16), 16


@pytest.fixture(scope="module")
def ramp():
    """Linear image ``value = y * W + x``: a block mean equals the value at the block's world centre."""
    y, x = np.mgrid[0:W, 0:W].astype(np.float64)
    return open_pyramid((y * W + x).astype(np.float32))


def test_true_boxes_are_the_boxes_of_the_pixels_read(ramp):
    rng = np.random.default_rng(3)
    fine = rng.uniform(150, 360, size=(12, 2))
    img, world, concentric, centers = offset_crops(ramp, fine, LEVELS, SIZE, rng)
    assert img.shape == (12, 3, 1, SIZE, SIZE) and world.shape == concentric.shape == (12, 3, 2, 2)
    for n in range(12):
        for j in range(3):
            ys = np.linspace(world[n, j, 0, 0], world[n, j, 1, 0], SIZE)
            xs = np.linspace(world[n, j, 0, 1], world[n, j, 1, 1], SIZE)
            np.testing.assert_allclose(img[n, j, 0], ys[:, None] * W + xs[None, :], atol=0.05)
            if j:  # nested: each coarser crop covers the finer one (half-pixel margins included)
                lo, hi = world[n, j, 0] - (LEVELS[j] - 1) / 2, world[n, j, 1] + (LEVELS[j] + 1) / 2
                lo_f, hi_f = world[n, j - 1, 0] - (LEVELS[j - 1] - 1) / 2, world[n, j - 1, 1] + (LEVELS[j - 1] + 1) / 2
                assert np.all(lo <= lo_f) and np.all(hi >= hi_f)
    # level 1 is never shifted; the coarse levels are, so concentric boxes are wrong there
    np.testing.assert_array_equal(world[:, 0], concentric[:, 0])
    assert np.abs(world[:, 2] - concentric[:, 2]).max() > 40


def test_concentric_boxes_match_pyramid_crops_and_zero_shift(ramp):
    fine = np.array([[200.3, 260.9], [255.5, 300.0]])
    expected = np.stack([ramp.crops(tuple(c), LEVELS, SIZE)[1] for c in fine])
    np.testing.assert_array_equal(concentric_boxes(fine, LEVELS, SIZE), expected)
    _, world, concentric, _ = offset_crops(ramp, fine, LEVELS, SIZE, np.random.default_rng(0), shift=0.0)
    np.testing.assert_array_equal(world, concentric)


class _OffsetDetector(torch.nn.Module):
    """Predicts class 1 where the level-16 box is centred on the level-1 box (within 12 px), else 0."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.encoder = type("E", (), {"levels": LEVELS})()

    def forward(self, x, bbox):
        off = (bbox[:, 2].mean(1) - bbox[:, 0].mean(1)).abs().amax(1)
        cls = (off < 12).long()
        return torch.nn.functional.one_hot(cls, 2).float()[:, :, None, None].expand(-1, -1, *x.shape[-2:])


def test_evaluate_offset_slide_scores_the_same_pixels_under_each_box_mode(ramp, torch_one_thread):
    truth = np.full((W, W), 2, np.int64)  # label value 2 = class 1 = "context centred on the tile"
    modes = ("world", "concentric", "scale_blind")
    out = evaluate_offset_slide(_OffsetDetector(), ramp, truth, SIZE, modes=modes, max_tiles=40, seed=5)
    assert all(out[m]["tiles"] == 40 for m in modes)
    assert out["concentric"]["accuracy"] == 1.0 and out["scale_blind"]["accuracy"] == 1.0
    assert 0.0 < out["world"]["accuracy"] < 0.6  # offsets of up to 100 px are visible only in the true boxes
    centred = evaluate_offset_slide(_OffsetDetector(), ramp, truth, SIZE, modes=("world",), shift=0.0, max_tiles=40)
    assert centred["world"]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="box mode"):
        evaluate_offset_slide(_OffsetDetector(), ramp, truth, SIZE, modes=("centred",))
