"""Layer builder: world pixels -> napari scale/translate (pure numbers, one viewer check)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_muvit.widgets import layer_updates as U
from napari_muvit.widgets import layers as L


@pytest.mark.parametrize("f", [1, 2, 4, 16])
def test_level_transform_puts_pixel_centres_on_the_convention(f):
    scale, translate = L.level_transform(f, pixel_size=(0.5, 0.25))
    assert scale == (f * 0.5, f * 0.25)
    assert translate == ((f - 1) / 2 * 0.5, (f - 1) / 2 * 0.25)
    # pixel k of level f has its centre at world k*f + (f-1)/2 (level-1 px) -> times pixel size
    k = 7
    napari_y = k * scale[0] + translate[0]
    assert napari_y == pytest.approx((k * f + (f - 1) / 2) * 0.5)


def test_level_transform_without_pixel_size_is_world_pixels():
    scale, translate = L.level_transform(4)
    assert scale == (4.0, 4.0) and translate == (1.5, 1.5)
    scale3, translate3 = L.level_transform((1, 4, 4), ndim=3)
    assert scale3 == (1.0, 4.0, 4.0) and translate3 == (0.0, 1.5, 1.5)


def test_world_napari_round_trip():
    world = np.array([[10.0, 20.0], [3.5, 0.0]])
    nap = L.world_to_napari(world, (0.5, 2.0))
    np.testing.assert_allclose(nap, [[5.0, 40.0], [1.75, 0.0]])
    np.testing.assert_allclose(L.napari_to_world(nap, (0.5, 2.0)), world)


def test_bbox_edges_cover_whole_pixels():
    # level-4 crop of 8 px whose first pixel centre is at world 1.5 (pixel 0 of level 4)
    bbox = np.array([[1.5, 1.5], [1.5 + 7 * 4, 1.5 + 7 * 4]])
    y0, x0, y1, x1 = L.bbox_edges(bbox, 4)
    # pixel 0 of level 4 covers world [-0.5, 3.5] (level-1 pixel centres are integers)
    assert (y0, x0) == (-0.5, -0.5)
    assert y1 - y0 == 8 * 4 and x1 - x0 == 8 * 4


def test_crop_outlines_one_rectangle_per_level():
    bboxes = np.array([[[100, 100], [163, 163]], [[77.5, 77.5], [329.5, 329.5]]])
    data, kwargs, kind = L.crop_outlines_layer(bboxes, [1, 4], pixel_size=(0.5, 0.5))
    assert kind == "shapes" and len(data) == 2
    np.testing.assert_allclose(data[0][0], [99.5, 99.5])
    np.testing.assert_allclose(data[1][2], [331.5, 331.5])
    assert kwargs["scale"] == (0.5, 0.5)
    np.testing.assert_array_equal(kwargs["features"]["level"], [1.0, 4.0])
    with pytest.raises(ValueError, match="2 crop boxes but 1 levels"):
        L.crop_outlines_layer(bboxes, [1])


def test_probability_layers_split_classes_and_skip_background():
    probs = [np.zeros((3, 32, 32), np.float32), np.zeros((3, 16, 16), np.float32)]
    out = L.probability_layers(probs, level=2, class_names=["background", "gland", "tumour"])
    assert [kw["name"] for _, kw, _ in out] == ["MuViT p(gland)", "MuViT p(tumour)"]
    data, kwargs, kind = out[0]
    assert kind == "image" and kwargs["multiscale"] and len(data) == 2 and data[0].shape == (32, 32)
    assert kwargs["scale"] == (2.0, 2.0) and kwargs["translate"] == (0.5, 0.5)
    assert kwargs["metadata"]["muvit"]["class_index"] == 1


def test_labels_layer_colours_skip_background():
    data, kwargs, kind = L.labels_layer(np.zeros((8, 8), np.uint8), level=1, class_names=["background", "a"],
                                        class_colors=["#000000", "#ff0000"])
    assert kind == "labels" and kwargs["colormap"][1] == "#ff0000" and kwargs["colormap"][0] == "transparent"


def test_layers_align_in_a_viewer(make_napari_viewer):
    """A level-4 output pixel and the 4x4 block of level-1 image pixels it covers share a centre."""
    viewer = make_napari_viewer()
    image = U.add_or_update(viewer, (np.zeros((64, 64)), dict(zip(("scale", "translate"),
                                                                   L.level_transform(1, (0.5, 0.5))),
                                                              name="img"), "image"))
    labels = U.add_or_update(viewer, L.labels_layer(np.zeros((16, 16), np.uint8), level=4, pixel_size=(0.5, 0.5)))
    block_centre = image.data_to_world((4 * 3 + 1.5, 4 * 5 + 1.5))  # mean of pixel centres 12..15, 20..23
    np.testing.assert_allclose(labels.data_to_world((3, 5)), block_centre)
    # replacing keeps the same layer object
    again = U.add_or_update(viewer, L.labels_layer(np.ones((16, 16), np.uint8), level=4, pixel_size=(0.5, 0.5)))
    assert again is labels and int(labels.data.max()) == 1
    pts = U.add_or_update(viewer, L.roi_points_layer([[13.5, 21.5]], {"score": [0.9], "rank": [1]},
                                                     pixel_size=(0.5, 0.5)))
    np.testing.assert_allclose(pts.data_to_world(pts.data[0]), block_centre)
    assert list(pts.features["rank"]) == [1]


def test_image_layers_split_channels_and_keep_rgb():
    from napari_muvit.data import open_pyramid

    two = open_pyramid(np.zeros((2, 300, 300), np.uint16), axes="cyx")
    two.pixel_size, two.unit = (0.25, 0.25), "micrometer"
    out = L.image_layers(two, name="cells", source="/data/cells.ome.zarr")
    assert [kw["name"] for _, kw, _ in out] == ["cells [channel 0]", "cells [channel 1]"]
    assert [kw["colormap"] for _, kw, _ in out] == ["green", "magenta"]
    data, kw, _ = out[1]
    assert kw["multiscale"] and data[0].shape == (300, 300) and data[1].shape == (150, 150)
    assert kw["scale"] == (0.25, 0.25) and kw["units"] == ("micrometer", "micrometer")
    assert kw["metadata"]["muvit"]["channel"] == 1 and kw["metadata"]["muvit"]["source"] == "/data/cells.ome.zarr"
    rgb = open_pyramid(np.zeros((300, 300, 3), np.uint8), axes="yxc")
    ((data, kw, kind),) = L.image_layers(rgb)
    assert kind == "image" and kw["rgb"] and data[0].shape == (300, 300, 3) and kw["contrast_limits"] == (0.0, 255.0)


def test_rgb_overview_is_channels_last_and_placed_at_its_level():
    data, kw, kind = L.rgb_overview_layer([np.zeros((3, 32, 48)), np.zeros((3, 16, 24))], level=8, origin=(64, 0))
    assert kind == "image" and kw["rgb"] and kw["multiscale"]
    assert data[0].shape == (32, 48, 3) and data[1].shape == (16, 24, 3)
    assert kw["scale"] == (8.0, 8.0) and kw["translate"] == (67.5, 3.5)  # origin + (8 - 1) / 2


def test_roi_polygons_attention_map_and_query_marker_builders():
    poly = np.array([[0.0, 0.0], [0.0, 9.0], [4.0, 9.0]])
    data, kw, kind = L.roi_polygons_layer([poly], {"rank": [1], "score": [0.7]}, pixel_size=(0.5, 0.5),
                                          extra_meta={"store": "s.zarr"})
    assert kind == "shapes" and kw["shape_type"] == "polygon" and kw["text"]["string"] == "{rank}"
    np.testing.assert_array_equal(data[0], poly)
    assert kw["scale"] == (0.5, 0.5) and kw["metadata"][L.META_KEY]["store"] == "s.zarr"
    assert "text" not in L.roi_polygons_layer([poly], {"score": [0.7]})[1]
    amap = np.arange(6, dtype=np.float64).reshape(2, 3)
    data, kw, kind = L.attention_map_layer(amap, 4, (32.0, 32.0), (15.5, 47.5), (0.0, 5.0), "magma",
                                           pixel_size=(0.25, 0.25))
    assert kind == "image" and data.dtype == np.float32
    assert kw["scale"] == (8.0, 8.0) and kw["translate"] == (15.5 * 0.25, 47.5 * 0.25)
    assert kw["metadata"][L.META_KEY] == {"kind": "attention", "level": 4, "cell": [32.0, 32.0]}
    data, kw, kind = L.query_marker_layer((10.0, 20.0), 32.0)
    assert kind == "points" and data.shape == (1, 2) and kw["size"] == 32.0 and kw["symbol"] == "square"


def test_reconstruction_layer_sits_on_its_crop():
    recon = np.random.default_rng(0).random((1, 4, 6)).astype(np.float64)
    bbox = np.array([[1.5, 5.5], [13.5, 25.5]])  # level 4: first pixel centre (1.5, 5.5) -> outer edge (0, 4)
    data, kw, kind = L.reconstruction_layer(recon, 4, bbox)
    assert kind == "image" and data.shape == (4, 6) and data.dtype == np.float32 and kw["colormap"] == "gray"
    scale, translate = L.level_transform(4, None, 2, origin=(0.0, 4.0))
    assert kw["scale"] == scale and kw["translate"] == translate and not kw["rgb"]
    rgb = L.reconstruction_layer(np.zeros((3, 4, 6)) + np.arange(6), 4, bbox)
    assert rgb[0].shape == (4, 6, 3) and rgb[1]["rgb"] and "colormap" not in rgb[1]
