"""npe2 reader, writers and sample data: layers come back world-aligned, exports are in slide pixels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from napari_muvit.widgets import _reader, _writer
from napari_muvit.widgets.layers import META_KEY


@pytest.fixture(scope="module")
def sample_path(tmp_path_factory):
    import os

    from napari_muvit.widgets import _sample

    old = os.environ.get("NAPARI_MUVIT_CACHE_DIR")
    os.environ["NAPARI_MUVIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield _sample.sample_slide_path(size=512, seed=3)
    finally:
        if old is None:
            os.environ.pop("NAPARI_MUVIT_CACHE_DIR")
        else:
            os.environ["NAPARI_MUVIT_CACHE_DIR"] = old


def test_get_reader_accepts_slides_only(sample_path, tmp_path):
    assert _reader.get_reader(str(sample_path)) is _reader.read_slide
    assert _reader.get_reader(str(tmp_path / "a.svs")) is _reader.read_slide
    assert _reader.get_reader(str(tmp_path / "a.png")) is None
    assert _reader.get_reader([str(sample_path), str(sample_path)]) is None


def test_reader_gives_multiscale_image_and_aligned_labels(sample_path):
    out = _reader.read_slide(str(sample_path))
    kinds = [t for _, _, t in out]
    assert kinds == ["image", "labels"]
    (img, ikw, _), (lab, lkw, _) = out
    assert ikw["multiscale"] and img[0].shape == (512, 512) and img[1].shape == (256, 256)
    assert ikw["scale"] == lkw["scale"] and ikw["translate"] == lkw["translate"] == (0.0, 0.0)
    assert ikw["metadata"][META_KEY]["source"] == str(sample_path)
    labels0 = np.asarray(lab[0])
    assert labels0.shape == (512, 512) and labels0.max() >= 1  # the ground truth has objects


def test_points_geojson_and_csv_in_slide_pixels(tmp_path):
    # layer shown with pixel size 0.5 um: data holds world px, scale = pixel size
    data = np.array([[10.0, 20.0], [30.5, 40.0]])
    meta = {"scale": (0.5, 0.5), "translate": (0.0, 0.0), "name": "rois",
            "metadata": {META_KEY: {"pixel_size": [0.5, 0.5]}},
            "features": pd.DataFrame({"score": [0.9, 0.4], "rank": [1, 2]})}
    (gj,) = _writer.write_geojson(str(tmp_path / "p.geojson"), data, meta)
    doc = json.loads(open(gj).read())
    # QuPath frame: pixel edges on integers, i.e. napari's pixel centres + 0.5
    assert [f["geometry"]["coordinates"] for f in doc["features"]] == [[20.5, 10.5], [40.5, 31.0]]
    assert doc["features"][0]["properties"] == {"score": 0.9, "rank": 1}
    (c,) = _writer.write_csv(str(tmp_path / "p.csv"), data, meta)
    rows = list(csv.DictReader(open(c)))
    assert [(float(r["y"]), float(r["x"]), int(r["rank"])) for r in rows] == [(10.0, 20.0, 1), (30.5, 40.0, 2)]


def test_shapes_geojson_and_csv(tmp_path):
    rect = np.array([[0.0, 0.0], [0.0, 8.0], [4.0, 8.0], [4.0, 0.0]])
    meta = {"scale": (2.0, 2.0), "translate": (10.0, 0.0), "shape_type": ["rectangle"], "name": "boxes"}
    (gj,) = _writer.write_geojson(str(tmp_path / "s.geojson"), [rect], meta)
    ring = json.loads(open(gj).read())["features"][0]["geometry"]["coordinates"][0]
    # no pixel size recorded: napari world units = data * scale + translate (+0.5); [x, y], closed ring
    assert ring[0] == [0.5, 10.5] and ring[2] == [16.5, 18.5] and ring[-1] == ring[0]
    (c,) = _writer.write_csv(str(tmp_path / "s.csv"), [rect], meta)
    row = next(csv.DictReader(open(c)))
    assert (float(row["y_min"]), float(row["x_max"]), float(row["centroid_y"])) == (10.0, 16.0, 14.0)


def test_labels_round_trip_through_ome_zarr(tmp_path):
    labels = np.zeros((1100, 600), np.uint8)
    labels[100:200, 300:350] = 2
    meta = {"scale": (0.5, 0.5), "translate": (0.0, 0.0), "name": "gt"}
    (path,) = _writer.write_labels_zarr(str(tmp_path / "gt.ome.zarr"), labels, meta)
    out = _reader.read_slide(path)
    data, kwargs, _ = out[0]
    level0 = np.asarray(data[0] if isinstance(data, list) else data)
    assert level0.shape[-2:] == (1100, 600)
    np.testing.assert_array_equal(level0.reshape(1100, 600), labels)
    with pytest.raises(FileExistsError, match="already exists"):
        _writer.write_labels_zarr(path, labels, meta)


def test_npe2_sample_opens_in_viewer(make_napari_viewer, sample_path, monkeypatch):
    from napari_muvit.widgets import _sample

    monkeypatch.setattr(_sample, "SAMPLE_SIZE", 512)
    monkeypatch.setattr(_sample, "SAMPLE_SEED", 3)  # the cached slide of the fixture
    viewer = make_napari_viewer()
    viewer.open_sample("napari-muvit", "synthetic_slide")
    names = [ly.name for ly in viewer.layers]
    assert len(names) == 2 and names[1] == "ground_truth"
    image, labels = viewer.layers
    assert image.multiscale and image.level_shapes[0].tolist() == [512, 512]
    np.testing.assert_allclose(image.data_to_world((100, 100)), labels.data_to_world((100, 100)))
