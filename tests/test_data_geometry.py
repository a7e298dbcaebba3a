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


# ---------------------------------------------------------------- helpers every module calls (one convention)
FACTORS = [1, 2, 3, 4, 8, 16, 32]
ORIGINS = [0.0, 7.0, -3.5, 512.0, 1234.25]


def test_pixel_centre_equals_the_inline_formula_it_replaces():
    from napari_muvit.data.geometry import pixel_centre

    idx = np.array([0, 1, 5, 17, 1023])
    for f in FACTORS:
        for o in ORIGINS:
            np.testing.assert_array_equal(pixel_centre(idx, f, o), o + idx * f + (f - 1) / 2)
    # fractional indices (a region centroid at a coarse level), per-axis origin: bit-identical to the old rois code
    cen = np.array([[3.3, 7.9], [0.1, 250.7]])
    f, y0w, x0w = 16.0, 1024.0, 2048.0
    old = np.array([[y0w + c[0] * f + (f - 1) / 2, x0w + c[1] * f + (f - 1) / 2] for c in cen])
    np.testing.assert_array_equal(pixel_centre(cen, f, (y0w, x0w)), old)


@pytest.mark.parametrize("f", FACTORS)
def test_pixel_corner_and_corner_centre(f):
    from napari_muvit.data.geometry import corner_centre, pixel_corner

    k = np.arange(-2, 9)
    centres = index_to_world(k, f)
    np.testing.assert_array_equal(pixel_corner(centres, f), k * f)  # pixel k starts at world k*f
    np.testing.assert_array_equal(corner_centre(k * f, f), centres)
    # a float32 crop bbox with a Python level stays float32, exactly as `bbox[0] - (level - 1) / 2.0` did
    bbox0 = np.array([100.5, 37.5], np.float32)
    out = pixel_corner(bbox0, f)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, bbox0 - (f - 1) / 2.0)
    # per-axis sizes (a token cell of level * patch px)
    cell = np.array([64.0, 128.0])
    np.testing.assert_array_equal(corner_centre([10.0, 20.0], cell), [10 + 31.5, 20 + 63.5])


def test_pixel_range_centre_and_tile_centres():
    from napari_muvit.data.geometry import pixel_range_centre, tile_centres

    assert pixel_range_centre(0, 256) == 127.5  # level-1 pixels 0..255
    np.testing.assert_array_equal(pixel_range_centre([10.0, 3.5], [20.0, 8.25]), [(10 + 20 - 1) / 2, (3.5 + 8.25 - 1) / 2])
    tiles = np.array([[0, 0], [1, 2], [7, 3]])
    for size in (16, 64, 256, 257):
        np.testing.assert_array_equal(tile_centres(tiles, size), tiles * size + (size - 1) / 2.0)
        # a tile's centre is the centre of its level-1 pixel range
        np.testing.assert_array_equal(tile_centres(tiles, size), pixel_range_centre(tiles * size, (tiles + 1) * size))
        for o in ORIGINS:
            np.testing.assert_array_equal(tile_centres(0, size, (o, 2 * o)), [o + (size - 1) / 2.0, 2 * o + (size - 1) / 2.0])


@pytest.mark.parametrize("f", FACTORS)
def test_centre_index_range_holds_exactly_the_pixels_with_centres_inside(f):
    import math

    from napari_muvit.data.geometry import centre_index_range, pixel_centre

    rng = np.random.default_rng(f)
    for _ in range(50):
        o = float(rng.choice(ORIGINS))
        lo = float(rng.uniform(-100, 1000))
        hi = lo + float(rng.uniform(0, 300))
        i0, i1 = centre_index_range(lo, hi, f, o)
        # the old inline formula of engine/measure.py
        assert int(i0) == math.floor((lo - o - (f - 1) / 2) / f)
        assert int(i1) == math.ceil((hi - o - (f - 1) / 2) / f) + 1
        k = np.arange(int(i0) - 3, int(i1) + 3)
        c = pixel_centre(k, f, o)
        inside = k[(c >= lo) & (c <= hi)]
        assert inside.size == 0 or (inside.min() >= i0 and inside.max() < i1)
        assert int(i1) - int(i0) <= inside.size + 2  # at most one extra pixel per end
    # vectorised over axes
    i0, i1 = centre_index_range((0.0, 10.0), (15.0, 30.0), 4, (0.0, 0.0))
    assert i0.tolist() == [-1, 2] and i1.tolist() == [5, 9]


@pytest.mark.parametrize("levels", [(1,), (1, 4), (1, 4, 16), (1, 8, 32), (2, 4)])
@pytest.mark.parametrize("size", [16, 64, 65])
def test_nested_crop_boxes_equal_the_per_level_loop(levels, size):
    from napari_muvit.data.geometry import nested_crop_boxes

    centres = np.array([[0.0, 0.0], [100.0, 37.5], [1234.5, 777.3], [-20.25, 5000.0]])
    starts, bbox = nested_crop_boxes(centres, levels, size)
    assert starts.shape == (4, len(levels), 2) and starts.dtype == np.int64
    assert bbox.shape == (4, len(levels), 2, 2) and bbox.dtype == np.float32
    for n, c in enumerate(centres):
        one_starts, one_bbox = nested_crop_boxes(c, levels, (size, size))
        np.testing.assert_array_equal(one_starts, starts[n])
        np.testing.assert_array_equal(one_bbox, bbox[n])
        for j, f in enumerate(levels):
            st = crop_start_index(c, f, np.array([size, size]))
            np.testing.assert_array_equal(starts[n, j], st)
            np.testing.assert_array_equal(bbox[n, j], crop_bbox(st, f, np.array([size, size])))
    # per-axis factors (3-D levels that do not downsample z)
    s3, b3 = nested_crop_boxes([5.0, 40.0, 40.0], [(1, 1, 1), (1, 4, 4)], 8)
    np.testing.assert_array_equal(b3[1, 1] - b3[1, 0], [7.0, 28.0, 28.0])


def test_level_translation_and_slide_translation_are_inverse():
    from napari_muvit.data.geometry import level_translation, ome_transforms, slide_translation

    for f in FACTORS:
        for p in (None, (0.25, 0.5)):
            for t in ((0.0, 0.0), (10.5, -3.25)):
                for o in ((0.0, 0.0), (512.0, 256.0)):
                    lt = level_translation(f, p, o, t)
                    pp = np.ones(2) if p is None else np.asarray(p)
                    np.testing.assert_array_equal(lt, np.asarray(t) + (np.asarray(o) + (f - 1) / 2) * pp)
                    assert lt.tolist() == ome_transforms(f, p, o, t)[1]["translation"]
                np.testing.assert_allclose(slide_translation(level_translation(f, p, (0.0, 0.0), t), f, p), t)
    # napari's translate of a 3-D level (widgets.layers.level_transform): no translation given = 0
    np.testing.assert_array_equal(level_translation((1, 4, 4), None, np.zeros(3)), [0.0, 1.5, 1.5])
