"""Writers other tools accept: labels validated by ome-zarr-models, vector layers in slide pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from ome_zarr.format import FormatV05
from ome_zarr.writer import write_multiscale, write_multiscale_labels
from ome_zarr_models.v05.image_label import ImageLabel

from napari_muvit.widgets import _reader, _writer

PS, T = 0.5, (100.0, 200.0)


@pytest.fixture
def slide(tmp_path):
    """A translated 2-D OME-Zarr (written by ome-zarr-py) with a 2-level labels image."""
    path = tmp_path / "slide.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    axes = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    img = np.zeros((128, 160), np.uint16)

    def ct(f):
        return [{"type": "scale", "scale": [PS * f, PS * f]},
                {"type": "translation", "translation": [T[0] + (f - 1) / 2 * PS, T[1] + (f - 1) / 2 * PS]}]

    write_multiscale([img, img[::2, ::2]], root, axes=axes, fmt=FormatV05(), coordinate_transformations=[ct(1), ct(2)])
    lab = np.zeros((128, 160), np.uint8)
    lab[10:20, 30:50] = 2
    lab[60, 70] = 5
    write_multiscale_labels([lab, lab[::2, ::2]], root, name="pred", axes=axes, fmt=FormatV05(),
                            coordinate_transformations=[ct(1), ct(2)])
    return path, lab


def _position(kwargs, index_yx):
    return np.asarray(index_yx, float) * np.asarray(kwargs["scale"])[-2:] + np.asarray(kwargs["translate"])[-2:]


def test_multiscale_labels_layer_saves_valid_and_in_place(slide, tmp_path, make_napari_viewer):
    path, lab = slide
    viewer = make_napari_viewer()
    for data, kwargs, kind in _reader.read_slide(str(path)):
        viewer._add_layer_from_data(data, kwargs, kind)
    layer = viewer.layers["pred"]
    assert layer.multiscale
    data, meta, _ = layer.as_layer_data_tuple()
    out = tmp_path / "saved.ome.zarr"
    (written,) = _writer.write_labels_zarr(str(out), data, meta)
    group = zarr.open_group(written, mode="r")
    ImageLabel.from_zarr(group)  # raises when the store breaks the NGFF 0.5 image-label spec
    assert group["0"].metadata.dimension_names == ("y", "x")
    np.testing.assert_array_equal(np.asarray(group["0"]), lab)
    ome = group.attrs["ome"]
    assert [a.get("unit") for a in ome["multiscales"][0]["axes"]] == ["micrometer", "micrometer"]
    colors = {c["label-value"]: c["rgba"] for c in ome["image-label"]["colors"]}
    assert sorted(colors) == [2, 5]
    expected = np.round(np.asarray(layer.colormap.map(np.array([2])))[0] * 255).astype(int).tolist()
    assert colors[2] == expected and len(colors[2]) == 4
    # reopened, label pixel (60, 70) is where it was: at the slide translation + index * pixel size
    (saved,) = _reader.read_slide(written)
    np.testing.assert_allclose(_position(saved[1], (60, 70)), (T[0] + 60 * PS, T[1] + 70 * PS))
    np.testing.assert_allclose(_position(saved[1], (60, 70)), _position(meta, (60, 70)))


def test_failed_labels_save_leaves_nothing_and_retry_works(tmp_path):
    out = tmp_path / "x.ome.zarr"
    with pytest.raises(ValueError, match="4 dimensions"):
        _writer.write_labels_zarr(str(out), np.zeros((2, 2, 8, 8), np.uint8), {"name": "x"})
    assert not out.exists() and not list(tmp_path.iterdir())
    _writer.write_labels_zarr(str(out), np.ones((8, 8), np.uint8), {"name": "x"})
    ImageLabel.from_zarr(zarr.open_group(str(out), mode="r"))


def test_new_shapes_layer_from_a_slide_writes_slide_pixels(slide, tmp_path, make_napari_viewer):
    from napari._app_model.actions._file import new_points, new_shapes

    path, _ = slide
    viewer = make_napari_viewer()
    for data, kwargs, kind in _reader.read_slide(str(path)):
        viewer._add_layer_from_data(data, kwargs, kind)
    viewer.layers.selection.active = viewer.layers["slide"]
    new_shapes(viewer)  # napari's own "new shapes layer" button: copies the slide's scale, not our metadata
    shapes = viewer.layers[-1]
    # a rectangle over slide pixels y 10..20, x 30..50, drawn in napari world coordinates (micrometres)
    world = np.array([[10, 30], [10, 50], [20, 50], [20, 30]], float) * PS + T
    shapes.add_polygons([(world - np.asarray(shapes.translate)) / np.asarray(shapes.scale)])
    data, meta, _ = shapes.as_layer_data_tuple()
    (gj,) = _writer.write_geojson(str(tmp_path / "s.geojson"), data, meta)
    ring = json.loads(open(gj).read())["features"][0]["geometry"]["coordinates"][0]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    # slide pixels in the pixel-edge frame (centre + 0.5)
    assert (min(xs), max(xs), min(ys), max(ys)) == (30.5, 50.5, 10.5, 20.5)
    viewer.layers.selection.active = viewer.layers["slide"]
    new_points(viewer)
    points = viewer.layers[-1]
    points.add((np.array([[7, 9]], float) * PS + T - np.asarray(points.translate)) / np.asarray(points.scale))
    data, meta, _ = points.as_layer_data_tuple()
    (csv_path,) = _writer.write_csv(str(tmp_path / "p.csv"), data, meta)
    row = open(csv_path).read().splitlines()[1].split(",")
    assert (float(row[1]), float(row[2])) == (7.0, 9.0)


def test_micrometre_layer_without_a_slide_is_refused(tmp_path):
    meta = {"scale": (0.5, 0.5), "translate": (0.0, 0.0), "units": ("micrometer", "micrometer"),
            "name": "cells", "metadata": {}}
    with pytest.raises(ValueError, match="layer 'cells' is in micrometer.*no napari-muvit slide is open"):
        _writer.write_geojson(str(tmp_path / "c.geojson"), np.array([[1.0, 2.0]]), meta)
    assert not (tmp_path / "c.geojson").exists()


def test_shapes_geojson_is_always_valid(tmp_path):
    import geojson
    import shapely.geometry

    shapes = [
        np.array([[0.0, 0.0], [0.0, 8.0], [4.0, 8.0], [4.0, 0.0]]),  # rectangle
        np.array([[0.0, 0.0], [4.0, 4.0], [0.0, 4.0], [4.0, 0.0]]),  # a bow-tie drawn by hand
        np.array([[1.0, 1.0], [1.0, 5.0]]),  # a 2-vertex polygon
        np.array([[2.0, 2.0], [2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]),  # a collapsed rectangle
        np.array([[0.0, 0.0], [0.0, 10.0], [6.0, 10.0], [6.0, 0.0]]),  # ellipse bbox
    ]
    meta = {"scale": (1.0, 1.0), "translate": (0.0, 0.0), "name": "s",
            "shape_type": ["rectangle", "polygon", "polygon", "rectangle", "ellipse"]}
    (gj,) = _writer.write_geojson(str(tmp_path / "v.geojson"), shapes, meta)
    doc = json.loads(open(gj).read())
    assert geojson.loads(json.dumps(doc)).is_valid
    kinds = [f["geometry"]["type"] for f in doc["features"]]
    assert kinds == ["Polygon", "LineString", "LineString", "Point", "Polygon"]
    for f in doc["features"]:
        geom = shapely.geometry.shape(f["geometry"])
        assert geom.is_valid and not geom.is_empty
    assert shapely.geometry.shape(doc["features"][0]["geometry"]).area == 32.0
    ellipse = shapely.geometry.shape(doc["features"][4]["geometry"])
    assert ellipse.area == pytest.approx(np.pi * 3 * 5, rel=0.01)
    assert doc["features"][3]["geometry"]["coordinates"] == [2.5, 2.5]
