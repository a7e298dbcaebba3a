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


# ---------------------------------------------------------------------- OME coordinateTransformations
def test_ome_transforms_place_pixel_centres():
    from napari_muvit.data.geometry import ome_transforms, read_ome_transforms

    # a level-4 array of a 0.5 um slide translated by (10, 20) um, starting at world corner (512, 256)
    tr = ome_transforms(4, (0.5, 0.5), (512, 256), (10.0, 20.0), channel=True)
    assert tr == [{"type": "scale", "scale": [1.0, 2.0, 2.0]},
                  {"type": "translation", "translation": [0.0, 10 + (512 + 1.5) * 0.5, 20 + (256 + 1.5) * 0.5]}]
    scale, trans = read_ome_transforms(tr)
    # its pixel (3, 5) covers world [524, 528) x [276, 280): centre (525.5, 277.5) -> physical T + w * p
    k = np.array([3, 5])
    np.testing.assert_allclose(k * scale[1:] + trans[1:], [10 + 525.5 * 0.5, 20 + 277.5 * 0.5])
    np.testing.assert_allclose(index_to_world(k, 4) + [512, 256], [525.5, 277.5])


def test_read_ome_transforms_composes_dataset_then_global():
    from napari_muvit.data.geometry import read_ome_transforms

    ds = [{"type": "scale", "scale": [1, 2, 2]}, {"type": "translation", "translation": [0, 1, 1]}]
    glob = [{"type": "scale", "scale": [1, 3, 3]}, {"type": "translation", "translation": [0, 5, -5]}]
    scale, trans = read_ome_transforms(ds, glob)
    np.testing.assert_allclose(scale, [1, 6, 6])
    np.testing.assert_allclose(trans, [0, 1 * 3 + 5, 1 * 3 - 5])
    scale, trans = read_ome_transforms(None, None, ndim=2)
    np.testing.assert_allclose(scale, [1, 1]) and np.testing.assert_allclose(trans, [0, 0])
    with pytest.raises(ValueError, match="'affine' is not supported"):
        read_ome_transforms([{"type": "affine", "affine": [[1, 0], [0, 1]]}], ndim=2)
    with pytest.raises(ValueError, match="must be 3 finite numbers"):
        read_ome_transforms([{"type": "scale", "scale": [1, 2]}], ndim=3)
    with pytest.raises(ValueError, match="positive"):
        read_ome_transforms([{"type": "scale", "scale": [1, 0]}])


def test_pixel_edges_and_frames():
    from napari_muvit.data.geometry import (
        centre_to_edge_frame,
        edge_to_centre_frame,
        pixel_centre,
        pixel_edges,
    )

    lo, hi = pixel_edges(3, 4, origin=100)
    assert (lo, hi) == (112.0, 116.0)
    assert pixel_centre(3, 4, origin=100) == 113.5 == (lo + hi - 1) / 2  # mean of level-1 centres 112..115
    np.testing.assert_allclose(centre_to_edge_frame([0.0, 9.0]), [0.5, 9.5])
    np.testing.assert_allclose(edge_to_centre_frame(centre_to_edge_frame([2.25])), [2.25])
