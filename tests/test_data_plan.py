"""CropPlan tiling, order, serialisation, done tracking and foreground skipping."""

import json

import numpy as np
import pytest

from napari_muvit.data import CropPlan, foreground_mask, open_pyramid


@pytest.fixture
def pyramid():
    a = np.zeros((1000, 1300), np.uint8)
    a[:, 700:] = 200  # bright tissue on the right half, empty on the left
    return open_pyramid(a)


def test_whole_slide_tiles_row_major(pyramid):
    plan = CropPlan(pyramid, None, (1, 4, 16), 256)
    assert plan.grid_shape == (4, 6) and len(plan) == 24  # ceil(1000/256), ceil(1300/256)
    assert [(t.row, t.col) for t in plan.tiles] == [(r, c) for r in range(4) for c in range(6)]
    assert [t.index for t in plan.tiles] == list(range(24))
    t = plan.tiles[7]
    assert (t.y0, t.x0) == (256, 256) and t.center_yx == (256 + 127.5, 256 + 127.5)
    img, bbox = plan.crops(t)
    # the finest crop sits exactly on the tile; the planned bboxes equal the crops' bboxes
    np.testing.assert_allclose(bbox[0], [[256, 256], [511, 511]])
    np.testing.assert_allclose(plan.bboxes(t), bbox)
    assert img.shape == (3, 1, 256, 256)


def test_region_overlap_and_level_grid(pyramid):
    plan = CropPlan(pyramid, (100, 400, 50, 650), (1, 8), 128, overlap=32)
    stride = 96
    assert plan.tiles[0].y0 == 100 and plan.tiles[0].x0 == 50
    assert plan.tiles[1].x0 - plan.tiles[0].x0 == stride
    # the tiles cover the region: last tile ends at or beyond its far edges
    assert max(t.y0 for t in plan.tiles) + 128 >= 400 and max(t.x0 for t in plan.tiles) + 128 >= 650
    assert plan.grid_shape == (3, 6)  # ceil((300-32)/96), ceil((600-32)/96)
    # a finest level of 2 snaps the tile grid to even world coordinates
    plan2 = CropPlan(pyramid, (101, 400, 51, 650), (2, 8), 64)
    assert all(t.y0 % 2 == 0 and t.x0 % 2 == 0 for t in plan2.tiles)
    np.testing.assert_allclose(plan2.bboxes(plan2.tiles[0])[0, 0], [100.5, 50.5])


def test_serialise_and_done(pyramid):
    plan = CropPlan(pyramid, None, (1, 4), 128, overlap=16)
    plan.mark_done([0, 3, 5])
    d = json.loads(json.dumps(plan.to_dict()))
    again = CropPlan.from_dict(d, pyramid)
    assert again.tiles == plan.tiles and again.done == {0, 3, 5}
    assert len(again.remaining) == len(plan) - 3
    with pytest.raises(ValueError, match="outside this plan"):
        again.mark_done(len(plan))
    other = open_pyramid(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="made for a slide of shape"):
        CropPlan.from_dict(d, other)


def test_foreground_mask_skips_background(pyramid):
    mask, level = foreground_mask(pyramid)
    assert level == 4 and mask.shape == (250, 325)
    assert mask[:, 176:].all() and not mask[:, :174].any()
    plan = CropPlan(pyramid, None, (1, 4), 256, mask=(mask, level))
    # tissue starts at x = 700: tiles at x0 = 512 (reaching 768) and beyond are kept, the rest skipped
    assert sorted({t.x0 for t in plan.tiles}) == [512, 768, 1024, 1280]
    assert len(plan) == 16 and [t.index for t in plan.tiles] == list(range(16))
    # a full-resolution boolean array works too (factor from the shape)
    plan_b = CropPlan(pyramid, None, (1, 4), 256, mask=np.asarray(pyramid.arrays[0][0] > 0))
    assert [(t.y0, t.x0) for t in plan_b.tiles] == [(t.y0, t.x0) for t in plan.tiles]


def test_plan_errors(pyramid):
    with pytest.raises(ValueError, match="overlap"):
        CropPlan(pyramid, None, (1, 4), 64, overlap=64)
    with pytest.raises(ValueError, match="outside the slide"):
        CropPlan(pyramid, (5000, 6000, 0, 10), (1, 4), 64)
    with pytest.raises(ValueError, match="empty"):
        CropPlan(pyramid, (10, 10, 0, 10), (1, 4), 64)
    with pytest.raises(ValueError, match="not nested"):
        CropPlan(pyramid, None, (1, 6, 8), 64)
