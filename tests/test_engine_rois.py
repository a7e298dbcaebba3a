"""ROI ranking (tiles and regions), NMS by distance, GeoJSON/CSV export and the rois command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from napari_muvit.cli import main
from napari_muvit.data import open_pyramid
from napari_muvit.engine.export import export_csv, export_geojson
from napari_muvit.engine.predict import predict
from napari_muvit.engine.recipe import Recipe
from napari_muvit.engine.rois import nms_by_distance, rank_rois
from napari_muvit.engine.testing import PixelSegmenter


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    torch.set_num_threads(1)
    img = np.zeros((256, 256), np.float32)
    img[40:70, 150:190] = 3.0  # bright blob A (class 0 wins where bright)
    img[180:200, 30:45] = 1.5  # dimmer, smaller blob B
    out = tmp_path_factory.mktemp("rois") / "p.zarr"
    model = PixelSegmenter(w=(2.0, 0.0, -1.0), b=(-1.0, 0.0, 0.0))
    predict(Recipe(out=str(out), tile=32, overlap=8, normalization={"policy": "none"}), model=model,
            pyramid=open_pyramid(img))
    return out


def test_nms_by_distance_keeps_best_far_apart():
    centres = np.array([[0, 0], [0, 10], [0, 100], [50, 0]], float)
    scores = np.array([0.9, 0.95, 0.5, 0.7])
    assert nms_by_distance(centres, scores, 20, 10) == [1, 3, 2]
    assert nms_by_distance(centres, scores, 0, 2) == [1, 0]


def test_tile_ranking_finds_the_blob(store):
    rois = rank_rois(store, score="class:class 0", top_k=3, min_distance=60)
    assert [r.rank for r in rois] == [1, 2, 3]
    top = rois[0]
    y0, y1, x0, x1 = top.bbox
    assert 40 <= top.centroid_yx[0] <= 70 and 150 <= top.centroid_yx[1] <= 190
    assert y1 - y0 == 24 and x1 - x0 == 24 and top.classification == "class 0"
    assert all(a.score >= b.score for a, b in zip(rois, rois[1:]))
    for a in rois:
        for b in rois:
            if a is not b:
                assert np.hypot(*np.subtract(a.centroid_yx, b.centroid_yx)) >= 60
    assert top.polygon_yx[0] == top.polygon_yx[-1] and len(top.polygon_yx) == 5
    ent = rank_rois(store, score="entropy", top_k=1)
    assert ent[0].score > 0 and ent[0].classification in ("class 0", "class 1", "class 2")


def test_region_ranking_outlines_blobs(store):
    rois = rank_rois(store, score="class:class 0", top_k=5, mode="regions")
    assert len(rois) == 2
    a, b = rois  # the brighter blob has the higher mean probability
    assert 40 <= a.centroid_yx[0] <= 70 and 150 <= a.centroid_yx[1] <= 190
    assert 180 <= b.centroid_yx[0] <= 200 and 30 <= b.centroid_yx[1] <= 45
    assert a.bbox == (40.0, 70.0, 150.0, 190.0)
    ys, xs = np.array(a.polygon_yx).T
    assert ys.min() == pytest.approx(40, abs=1) and ys.max() == pytest.approx(70, abs=1)
    assert a.area == 30 * 40


def test_geojson_and_csv_exports(store, tmp_path):
    rois = rank_rois(store, score="class:class 0", top_k=4)
    gj = json.loads(export_geojson(rois, tmp_path / "r.geojson", "class:class 0").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 4
    f = gj["features"][0]
    ring = f["geometry"]["coordinates"][0]
    assert f["geometry"]["type"] == "Polygon" and ring[0] == ring[-1]
    y0, y1, x0, x1 = rois[0].bbox
    assert ring[0] == [x0, y0] and ring[2] == [x1, y1]  # [x, y] order, pixel-edge coordinates
    assert f["properties"]["rank"] == 1 and f["properties"]["classification"]["name"] == "class 0"
    assert f["properties"]["score"] == pytest.approx(rois[0].score)
    rows = list(csv.DictReader(open(export_csv(rois, tmp_path / "r.csv"))))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[0]["centroid_y"]) == pytest.approx(rois[0].centroid_yx[0], abs=0.01)
    assert {"bbox_y0", "bbox_x1", "score", "classification"} <= set(rows[0])


def test_rois_command(store, tmp_path, capsys):
    out = tmp_path / "cli.geojson"
    assert main(["rois", str(store), "--score", "class:class 0", "--top-k", "2", "--export", str(out),
                 "--export", str(tmp_path / "cli.csv")]) == 0
    assert len(json.loads(out.read_text())["features"]) == 2 and (tmp_path / "cli.csv").exists()
    assert main(["rois", str(store), "--score", "tumour"]) == 2
    err = capsys.readouterr().err
    assert "tumour" in err and "class:class 0" in err and "\n" not in err.strip()
    assert main(["rois", str(store), "--export", "x.txt"]) == 2
