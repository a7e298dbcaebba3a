"""Exports other tools accept: GeoJSON ROIs validated with geojson and shapely, colours from the store."""

from __future__ import annotations

import json

import geojson
import numpy as np
import pytest
import shapely.geometry
import torch
import zarr

from napari_muvit.cli import main
from napari_muvit.data import open_pyramid
from napari_muvit.engine.export import export_geojson, store_class_colors, valid_ring
from napari_muvit.engine.predict import predict
from napari_muvit.engine.recipe import Recipe
from napari_muvit.engine.rois import Roi, rank_rois
from napari_muvit.engine.testing import PixelSegmenter


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    torch.set_num_threads(1)
    img = np.zeros((128, 128), np.float32)
    img[20:40, 70:100] = 3.0  # a blob of class 0
    img[90, 30] = 3.0  # a single bright pixel: a 1-pixel region
    img[100, 100:103] = 3.0  # a 1 x 3 line: a zero-height outline at level 1
    out = tmp_path_factory.mktemp("exp") / "p.zarr"
    model = PixelSegmenter(w=(2.0, 0.0, -1.0), b=(-1.0, 0.0, 0.0))
    predict(Recipe(out=str(out), tile=32, overlap=8, normalization={"policy": "none"}), model=model,
            pyramid=open_pyramid(img))
    return out


def _assert_valid(doc: dict) -> None:
    obj = geojson.loads(json.dumps(doc))
    assert obj.is_valid, obj.errors()
    for f in doc["features"]:
        ring = f["geometry"]["coordinates"][0]
        assert len(ring) >= 4 and ring[0] == ring[-1]
        geom = shapely.geometry.shape(f["geometry"])
        assert geom.is_valid and not geom.is_empty and geom.area > 0


def test_region_export_is_valid_even_for_one_pixel_regions(store, tmp_path):
    rois = rank_rois(store, score="class:class 0", top_k=10, mode="regions")
    areas = sorted(r.area for r in rois)
    assert areas[0] == 1.0 and 3.0 in areas  # the single pixel and the 1 x 3 line are ranked
    path = tmp_path / "r.geojson"
    assert main(["rois", str(store), "--score", "class:class 0", "--regions", "--export", str(path)]) == 0
    doc = json.loads(path.read_text())
    _assert_valid(doc)
    assert len(doc["features"]) == len(rois) == 3  # degenerate outlines are written as their pixel bbox
    one = next(f for f in doc["features"] if f["properties"]["measurements"]["area_px"] == 1.0)
    geom = shapely.geometry.shape(one["geometry"])
    # pixel (90, 30) spans [30, 31) x [90, 91) in the pixel-edge frame
    assert geom.bounds == (30.0, 90.0, 31.0, 91.0) and geom.area == 1.0


def test_degenerate_rings_are_fixed_or_dropped(tmp_path):
    three = Roi(1, 0.9, (5.0, 5.0), (5, 6, 5, 6), "a", [(5, 5), (6, 6), (5, 5)], 1.0)
    bowtie = Roi(2, 0.8, (0, 0), (0, 2, 0, 2), "a", [(0, 0), (2, 2), (0, 2), (2, 0), (0, 0)], 2.0)
    empty = Roi(3, 0.7, (0, 0), (4, 4, 1, 1), "a", [], 0.0)
    doc = json.loads(export_geojson([three, bowtie, empty], tmp_path / "d.geojson").read_text())
    _assert_valid(doc)
    assert [f["properties"]["rank"] for f in doc["features"]] == [1, 2]  # the empty one is left out
    assert shapely.geometry.shape(doc["features"][1]["geometry"]).bounds == (0.0, 0.0, 2.0, 2.0)
    assert valid_ring([[0, 0], [1, 0], [0, 0]]) is None
    assert valid_ring([[0, 0], [0, 1], [1, 1], [1, 0]])[0] == valid_ring([[0, 0], [0, 1], [1, 1], [1, 0]])[-1]


def test_classification_colours_come_from_the_store(store, tmp_path):
    labels = zarr.open_group(str(store / "labels" / "prediction"), mode="r").attrs["ome"]["image-label"]
    value = next(p["label-value"] for p in labels["properties"] if p["class"] == "class 0")
    expected = next(c["rgba"][:3] for c in labels["colors"] if c["label-value"] == value)
    assert store_class_colors(store)["class 0"] == expected
    path = tmp_path / "c.geojson"
    assert main(["rois", str(store), "--score", "class:class 0", "--export", str(path)]) == 0
    colors = {tuple(f["properties"]["classification"]["color"]) for f in json.loads(path.read_text())["features"]}
    assert colors == {tuple(expected)}
    # a store whose card gave class 0 another colour exports that colour (not a per-file palette pick)
    g = zarr.open_group(str(store / "labels" / "prediction"), mode="a")
    ome = dict(g.attrs["ome"])
    old = json.loads(json.dumps(ome))
    try:
        ome["image-label"] = dict(ome["image-label"], colors=[
            dict(c, rgba=[12, 34, 56, 255]) if c["label-value"] == value else c for c in ome["image-label"]["colors"]])
        g.attrs["ome"] = ome
        path2 = tmp_path / "c2.geojson"
        assert main(["rois", str(store), "--score", "class:class 0", "--export", str(path2)]) == 0
        colors = {tuple(f["properties"]["classification"]["color"]) for f in json.loads(path2.read_text())["features"]}
        assert colors == {(12, 34, 56)}
    finally:
        g.attrs["ome"] = old
