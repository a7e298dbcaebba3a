"""Default ROI scores: a store with a background class never ranks background first (engine and CLI)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_muvit.cli import main
from napari_muvit.data import open_pyramid
from napari_muvit.engine.predict import predict
from napari_muvit.engine.recipe import Recipe
from napari_muvit.engine.rois import default_score, rank_rois, score_names
from napari_muvit.engine.testing import PixelSegmenter

CLASSES = ["background", "cell", "stroma"]


def background_store(out):
    """256 px slide, dark almost everywhere (background wins there) with two bright blobs (cell wins)."""
    img = np.zeros((256, 256), np.float32)
    img[40:70, 150:190] = 3.0
    img[180:200, 30:45] = 1.5
    model = PixelSegmenter(w=(0.0, 2.0, 0.8), b=(2.0, 0.0, 0.0))
    model.card.class_names = list(CLASSES)
    predict(Recipe(out=str(out), tile=32, overlap=8, normalization={"policy": "none"}), model=model,
            pyramid=open_pyramid(img))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return background_store(tmp_path_factory.mktemp("bg") / "p.zarr")


def test_default_score_is_foreground_and_listed_first(store):
    import zarr

    meta = dict(zarr.open_group(str(store), mode="r").attrs["napari_muvit"])
    assert default_score(meta) == "foreground"
    assert score_names(meta) == ["foreground", "class:background", "class:cell", "class:stroma", "entropy"]
    assert default_score({"score_names": ["pc1", "pc2", "pc3", "mae_error"]}) == "mae_error"
    assert default_score({"score_names": ["pc1"]}) is None


def test_default_ranking_never_surfaces_background(store):
    rois = rank_rois(store, top_k=20)
    assert rois and all(r.classification != "background" for r in rois)
    # the brighter blob first: its tiles have the highest cell probability
    assert 40 <= rois[0].centroid_yx[0] <= 70 and 150 <= rois[0].centroid_yx[1] <= 190
    assert rois[0].classification == "cell"
    assert [r.score for r in rois] == sorted((r.score for r in rois), reverse=True)
    # the same score asked by name gives the same ROIs
    named = rank_rois(store, score="foreground", top_k=20)
    assert [(r.tile_index, r.score) for r in named] == [(r.tile_index, r.score) for r in rois]
    # ranking by the background class itself is still possible when asked for, and differs
    bg = rank_rois(store, score="class:background", top_k=20)
    assert bg[0].classification == "background" and bg[0].score > 0.7


def test_rois_command_default_and_bad_score(store, tmp_path, capsys):
    import csv

    out = tmp_path / "default.csv"
    assert main(["rois", str(store), "--top-k", "5", "--export", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in printed[1:6]]
    assert len(rows) == 5 and all(r[-1] != "background" for r in rows)
    exported = list(csv.DictReader(open(out)))
    assert [r["classification"] for r in exported] == [r[-1] for r in rows]
    assert main(["rois", str(store), "--score", "nuclei"]) == 2
    err = capsys.readouterr().err
    assert "'nuclei'" in err and "foreground" in err and "class:cell" in err
