"""Classifier, encoder (PCA RGB) and MAE outputs; foreground-only runs skip and mark background tiles."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import zarr

from napari_muvit.data import open_pyramid
from napari_muvit.engine.context import resolve
from napari_muvit.engine.predict import predict
from napari_muvit.engine.recipe import Recipe
from napari_muvit.engine.rois import rank_rois
from napari_muvit.engine.testing import ConstantSegmenter, random_slide
from napari_muvit.engine.tileops import read_batch

NONE = {"policy": "none"}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _encoder():
    from napari_muvit.model import ModelCard, MuViTEncoder

    torch.manual_seed(1)
    enc = MuViTEncoder(in_channels=1, levels=(1, 4), patch_size=4, num_layers=1, dim=32, heads=1).eval()
    enc.card = ModelCard(task="encoder", levels=(1, 4), crop_size=32)
    return enc


def test_classifier_gives_one_score_per_tile(tmp_path):
    from napari_muvit.model import ModelCard, MuViTClassifier

    torch.manual_seed(0)
    model = MuViTClassifier(_encoder(), 3, hidden=16).eval()
    model.card = ModelCard(task="classification", levels=(1, 4), crop_size=32, class_names=["a", "b", "c"])
    img = random_slide((120, 150))
    pyr = open_pyramid(img)
    recipe = Recipe(out=str(tmp_path / "c.zarr"), overlap=8, normalization=NONE)
    res = predict(recipe, model=model, pyramid=pyr)
    g = zarr.open_group(str(res.path), mode="r")
    probs = g["0"][:]
    assert probs.shape == (3, 5, 7)  # one pixel per 24 px tile stride
    ctx = resolve(recipe.replace(out=""), model=model, pyramid=pyr)
    x, bbox = read_batch(ctx, [(2, 3)])
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(x), torch.from_numpy(bbox)), 1)[0].numpy()
    np.testing.assert_allclose(probs[:, 2, 3], expected, atol=1e-5)
    np.testing.assert_array_equal(g["labels/prediction/0"][:], probs.argmax(0) + 1)
    ms = g.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert ms[0]["scale"] == [1.0, 24.0, 24.0] and ms[1]["translation"] == [0.0, 11.5, 11.5]
    from napari_muvit.engine.store import OutputStore

    store = OutputStore.open(res.path)  # a tile grid covers the region and starts at its corner
    assert store.layout["extent"] == "region" and store.origin_yx == (0.0, 0.0) and store.factor == 24.0
    np.testing.assert_array_equal(np.asarray(store.image_levels()[0]), probs)
    top = rank_rois(res.path, score="class:b", top_k=1)[0]
    assert top.score == pytest.approx(probs[1].max(), abs=1e-5)


def test_encoder_gives_pca_rgb_overview(tmp_path):
    enc = _encoder()
    img = random_slide((100, 130), seed=4)
    recipe = Recipe(out=str(tmp_path / "e.zarr"), overlap=8, normalization=NONE)
    res = predict(recipe, model=enc, pyramid=open_pyramid(img))
    g = zarr.open_group(str(res.path), mode="r")
    rgb = g["0"][:]
    assert rgb.shape == (3, 25, 33) and rgb.min() >= 0 and rgb.max() <= 1  # one pixel per 4 px patch
    assert rgb.std(axis=(1, 2)).min() > 0.01
    pca = g.attrs["napari_muvit"]["pca"]
    assert np.asarray(pca["components"]).shape == (3, 32)
    # tile (1, 2)'s owned tokens are its features projected with the stored PCA
    ctx = resolve(recipe.replace(out=""), model=enc, pyramid=open_pyramid(img))
    ctx.output.pca = pca
    x, bbox = read_batch(ctx, [(1, 2)])
    feats = enc.spatial_features(torch.from_numpy(x), torch.from_numpy(bbox))[:, 0].detach().numpy()
    proj = ctx.output.project(feats)[0]
    np.testing.assert_allclose(rgb[:, 6:12, 12:18], proj[:, 1:7, 1:7], atol=1e-5)
    # a resumed run uses the stored PCA: rerunning gives the same picture
    res2 = predict(recipe.replace(out=str(tmp_path / "e2.zarr")), model=enc, pyramid=open_pyramid(img))
    np.testing.assert_allclose(zarr.open_group(str(res2.path), mode="r")["0"][:], rgb, atol=1e-6)


def test_encoder_overlap_must_fit_patches(tmp_path):
    with pytest.raises(ValueError, match="multiple of 8"):
        predict(Recipe(out=str(tmp_path / "x.zarr"), overlap=4, normalization=NONE), model=_encoder(),
                pyramid=open_pyramid(random_slide((64, 64))))


def test_mae_error_is_a_tile_score(tmp_path):
    from napari_muvit.model import ModelCard
    from napari_muvit.model.mae import MuViTMAE

    torch.manual_seed(2)
    mae = MuViTMAE(levels=(1, 4), patch_size=4, num_layers=1, dim=32, heads=1, dim_decoder=24,
                   num_layers_decoder=1).eval()
    mae.card = ModelCard(task="mae", levels=(1, 4), crop_size=32)
    img = random_slide((96, 96), seed=5)
    img[60:, 60:] = 5.0  # an unusual, saturated corner
    res = predict(Recipe(out=str(tmp_path / "m.zarr"), overlap=8, normalization=NONE), model=mae,
                  pyramid=open_pyramid(img))
    rows = list(csv.DictReader(open(res.path / "tiles.csv")))
    errs = np.array([float(r["mae_error"]) for r in rows])
    assert len(errs) == 16 and np.all(errs > 0)
    top = rank_rois(res.path, score="mae_error", top_k=1, min_distance=0)[0]
    assert top.score == pytest.approx(errs.max(), rel=1e-5)
    # fixed mask seed per tile: a second run scores every tile the same
    res2 = predict(Recipe(out=str(tmp_path / "m2.zarr"), overlap=8, normalization=NONE, batch_size=3), model=mae,
                   pyramid=open_pyramid(img))
    errs2 = np.array([float(r["mae_error"]) for r in csv.DictReader(open(res2.path / "tiles.csv"))])
    np.testing.assert_allclose(errs2, errs, rtol=1e-5)


def test_foreground_skips_and_marks_background_tiles(tmp_path):
    img = np.zeros((96, 192), np.float32)
    img[:, :80] = 1.0 + random_slide((96, 80)) * 0.1  # tissue on the left only
    res = predict(Recipe(out=str(tmp_path / "f.zarr"), tile=32, overlap=8, foreground=True, normalization=NONE),
                  model=ConstantSegmenter(), pyramid=open_pyramid(img))
    rows = list(csv.DictReader(open(res.path / "tiles.csv")))
    status = {(int(r["row"]), int(r["col"])): r["status"] for r in rows}
    assert status[(0, 0)] == "done" and status[(0, 7)] == "background"
    assert res.tiles_background == sum(s == "background" for s in status.values()) > 0
    assert res.tiles_done + res.tiles_background == res.tiles_total
    g = zarr.open_group(str(res.path), mode="r")
    labels = g["labels/prediction/0"][:]
    assert np.all(labels[:, 170:] == 0) and np.all(labels[:, :60] == 3)  # 0 = not predicted
    assert np.all(g["0"][:, :, 170:] == 0)


def test_mask_file_limits_the_run(tmp_path):
    img = random_slide((96, 192))
    mask = np.zeros((24, 48), np.uint8)  # slide / 4
    mask[:, 30:] = 1  # right part only (world x >= 120)
    np.save(tmp_path / "mask.npy", mask)
    res = predict(Recipe(out=str(tmp_path / "m.zarr"), tile=32, overlap=8, mask=str(tmp_path / "mask.npy"),
                         normalization=NONE), model=ConstantSegmenter(), pyramid=open_pyramid(img))
    labels = zarr.open_group(str(res.path), mode="r")["labels/prediction/0"][:]
    assert np.all(labels[:, :120] == 0) and np.all(labels[:, 120:] == 3)
    assert res.tiles_background == 4 * 5  # columns 0-4 of the 4 x 8 grid own x < 120
    np.save(tmp_path / "bad.npy", np.zeros((30, 30)))
    with pytest.raises(ValueError, match="whole"):
        predict(Recipe(out=str(tmp_path / "b.zarr"), tile=32, overlap=8, mask=str(tmp_path / "bad.npy"),
                       normalization=NONE), model=ConstantSegmenter(), pyramid=open_pyramid(img))
