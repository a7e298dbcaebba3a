"""QuPath GeoJSON in napari: the plugin reads annotations as Shapes on the slide; shapes become regions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

pytest.importorskip("shapely")
from shapely.geometry import shape  # noqa: E402

from napari_muvit.data.qupath import regions_to_geojson  # noqa: E402
from napari_muvit.engine.measure import LabelSource, measure_labels  # noqa: E402
from napari_muvit.widgets.annotation_layers import regions_from_shapes  # noqa: E402

DOC = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "id": "a1", "geometry": {"type": "Polygon", "coordinates": [
        [[10, 20], [50, 20], [50, 60], [10, 60], [10, 20]], [[20, 30], [30, 30], [30, 40], [20, 40], [20, 30]]]},
     "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
    {"type": "Feature", "id": "a2", "geometry": {"type": "Polygon", "coordinates": [
        [[60, 5], [70, 5], [70, 15], [60, 15], [60, 5]]]},
     "properties": {"objectType": "annotation", "name": "Stroma patch", "classification": {"name": "Stroma"}}},
]}


@pytest.fixture
def files(tmp_path):
    slide = tmp_path / "slide.tif"  # 0.5 um pixels from the TIFF resolution tags (pixels per cm)
    tifffile.imwrite(slide, np.zeros((80, 100), np.uint16), resolution=(2e4, 2e4), resolutionunit=3)
    ann = tmp_path / "slide.geojson"
    ann.write_text(json.dumps(DOC))
    return slide, ann


def test_annotations_open_as_shapes_on_the_slide(make_napari_viewer, files):
    slide, ann = files
    viewer = make_napari_viewer()
    viewer.open(str(slide), plugin="napari-muvit")
    (layer,) = viewer.open(str(ann), plugin="napari-muvit")
    assert layer.name == "slide annotations" and len(layer.data) == 3  # exterior, hole, second polygon
    assert tuple(layer.scale) == (0.5, 0.5)
    assert list(layer.features["class"]) == ["Tumor", "Tumor", "Stroma"]
    assert list(layer.features["hole"]) == [False, True, False]
    assert np.allclose(layer.edge_color[0][:3], np.array([200, 0, 0]) / 255)
    # QuPath (x=10, y=20) is the top-left edge of pixel (20, 10): world (19.5, 9.5), napari 0.5 um units
    assert layer.data[0][0].tolist() == [19.5, 9.5]
    corner = layer.data_to_world(layer.data[0][0])
    image = viewer.layers[0]
    assert np.allclose(image.world_to_data(corner), [19.5, 9.5])  # half a pixel before pixel 20's centre

    regions = regions_from_shapes(layer)  # not edited: the annotations themselves, holes included
    assert [r.name for r in regions] == ["Tumor 1", "Stroma patch"] and len(regions[0].polygons[0]) == 2
    back = regions_to_geojson(regions)
    for written, original in zip(back["features"], DOC["features"]):
        assert shape(written["geometry"]).equals(shape(original["geometry"]))


def test_drawn_shapes_become_measurement_regions(make_napari_viewer, files):
    slide, _ = files
    viewer = make_napari_viewer()
    viewer.open(str(slide), plugin="napari-muvit")
    # a rectangle and an ellipse drawn on the slide, in napari's um coordinates (as napari's tools store them)
    rect = np.array([[9.5, 9.5], [9.5, 29.5], [19.5, 29.5], [19.5, 9.5]]) * 0.5  # world px edges * 0.5 um
    ellipse = np.array([[40, 40], [40, 60], [60, 60], [60, 40]], float) * 0.5
    layer = viewer.add_shapes([rect, ellipse], shape_type=["rectangle", "ellipse"])
    layer.features = {"name": ["box", ""], "class": ["Tumor", ""]}
    regions = regions_from_shapes(layer)
    assert [(r.name, r.classification) for r in regions] == [("box", "Tumor"), ("shape 2", None)]
    assert regions[0].bounds == (9.5, 19.5, 9.5, 29.5)
    lab = np.full((80, 100), 2, np.uint8)
    table = measure_labels(LabelSource(lab, ["background", "tumour"]), regions)
    assert table.row("box", "tumour")["pixels"] == 10 * 20  # rows 10..19, columns 10..29
    circle = table.row("shape 2", "tumour")["pixels"]
    assert abs(circle - np.pi * 10 * 10) < 12  # a radius-10 px disc (64-gon) in pixel centres
