"""World <-> index convention, crop placement and level validation."""

import numpy as np
import pytest

from napari_muvit.data.geometry import (
    crop_bbox,
    crop_start_index,
    index_to_world,
    validate_crop_size,
    validate_levels,
    world_to_index,
)


@pytest.mark.parametrize("f", [1, 2, 4, 8, 32])
def test_pixel_centres_and_inverse(f):
    k = np.arange(-3, 10)
    w = index_to_world(k, f)
    np.testing.assert_allclose(w, k * f + (f - 1) / 2)
    np.testing.assert_allclose(world_to_index(w, f), k)
    # level-1 pixel centres are integers; a level-f pixel centre is the mean of the level-1 centres it covers
    np.testing.assert_allclose(index_to_world(5, f), np.mean(np.arange(5 * f, 6 * f)))


@pytest.mark.parametrize("f,size", [(1, 64), (4, 64), (16, 64), (8, 256), (3, 5)])
def test_bbox_extent_and_centring(f, size):
    for center in (0.0, 100.0, 1234.5, 777.3):
        start = crop_start_index(np.array([center, center]), f, size)
        bbox = crop_bbox(start, f, size)
        assert bbox.shape == (2, 2)
        np.testing.assert_allclose(bbox[1] - bbox[0], (size - 1) * f)
        # rounding to the level's pixel grid moves the crop centre by at most half a pixel of that level
        assert np.all(np.abs(bbox.mean(axis=0) - center) <= f / 2 + 1e-6)


def test_rounding_is_half_up_and_nested():
    # level 1, size 64 centred on 500: exact start 468.5 -> 469
    assert crop_start_index(500.0, 1, 64).item() == 469
    assert crop_start_index(-0.5, 1, 2).item() == -1  # -1.0 exactly
    # nesting: the coarse crop's world extent contains the fine one for many centres
    for c in np.linspace(-50, 5000, 97):
        lo_f, hi_f = crop_start_index(c, 1, 64), crop_start_index(c, 1, 64) + 64
        s4 = crop_start_index(c, 4, 64)
        assert s4 * 4 <= lo_f and (s4 + 64) * 4 >= hi_f


def test_matches_reference_default_extent():
    # the encoder without bbox uses half-extent f*(S/2-0.5): total extent (S-1)*f, as ours
    f, size = 8, 32
    bbox = crop_bbox(crop_start_index(0.0, f, size), f, size)
    np.testing.assert_allclose((bbox[1] - bbox[0]) / 2, f * (size / 2 - 0.5))


def test_validate_levels():
    assert validate_levels([1, 4.0, 16]) == (1, 4, 16)
    with pytest.raises(ValueError, match="ascending"):
        validate_levels((4, 1))
    with pytest.raises(ValueError, match="not nested"):
        validate_levels((1, 3, 8))
    with pytest.raises(ValueError, match="whole downsample"):
        validate_levels((1, 2.5))
    with pytest.raises(ValueError, match="empty"):
        validate_levels(())


def test_validate_crop_size():
    assert validate_crop_size(256, 16) == 256
    with pytest.raises(ValueError, match="not divisible by the patch size 8"):
        validate_crop_size(100, 8)
    with pytest.raises(ValueError, match="positive"):
        validate_crop_size(0)
