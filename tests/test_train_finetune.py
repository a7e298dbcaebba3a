"""Fine-tuning and the scribble probe on easy synthetic slides, and the one-line CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_muvit.data import synthetic_slide
from napari_muvit.engine.training import TrainRecipe, finetune, fit_probe
from napari_muvit.model import ModelCard, MuViTSegmenter, load_model, save_model
from napari_muvit.model.mae import MuViTMAE

TINY = dict(patch_size=8, dim=48, num_layers=2, heads=2, dim_decoder=48, num_layers_decoder=1)


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    """Slide, labels (1 = background, 2 = cell) and an untrained tiny MAE folder with levels (1, 4)."""
    image, labels, _ = synthetic_slide(768, seed=3)
    easy = (labels > 1).astype(np.uint8) + 1
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("base") / "mae"
    save_model(MuViTMAE(levels=(1, 4), **TINY), base, card=ModelCard(task="mae", levels=(1, 4), crop_size=32))
    return image, easy, base


def test_finetune_segmentation_from_sparse_labels_beats_chance(easy, tmp_path):
    image, labels, base = easy
    sparse = np.where((np.arange(768)[:, None] // 16) % 2 == 0, labels, 0)  # half the rows unlabelled
    recipe = TrainRecipe(class_names=["background", "cell"], epochs=2, steps_per_epoch=15, batch_size=4, lr=3e-3,
                         device="cpu", seed=1)
    result = finetune(image, sparse, base, tmp_path / "seg", recipe)
    assert [r["epoch"] for r in result.history] == [1, 2]
    last = result.history[-1]
    assert {"mDSC", "accuracy", "auc", "dice_background", "dice_cell", "val_loss"} <= set(last)
    # cells cover ~4 % of the pixels: chance Dice for them is ~0.08
    assert last["dice_cell"] > 0.7 and last["auc"] > 0.95, last
    assert last["val_pixels"] > 0
    model = load_model(tmp_path / "seg")
    assert isinstance(model, MuViTSegmenter)
    assert model.card.class_names == ["background", "cell"] and len(model.card.class_colors) == 2
    assert model.card.levels == (1, 4) and model.card.crop_size == 32
    assert (tmp_path / "seg" / "training" / "history.csv").is_file()


def test_finetune_cancel_stops_and_saves(easy, tmp_path):
    image, labels, base = easy
    seen = {"n": 0}
    result = finetune(image, labels, base, tmp_path / "c", TrainRecipe(epochs=3, steps_per_epoch=5, batch_size=2,
                      device="cpu"), progress=lambda d, t: seen.update(n=d), cancel=lambda: seen["n"] >= 2)
    assert result.cancelled and result.steps_done == 2 and result.total_steps == 15
    assert (tmp_path / "c" / "model.pth").is_file()


def test_finetune_resume_continues_the_interrupted_run(easy, tmp_path):
    image, labels, base = easy
    recipe = TrainRecipe(epochs=2, steps_per_epoch=3, batch_size=2, lr=3e-3, device="cpu", seed=2)
    full = finetune(image, labels, base, tmp_path / "full", recipe)
    seen = {"n": 0}
    part = finetune(image, labels, base, tmp_path / "part", recipe, progress=lambda d, t: seen.update(n=d),
                    cancel=lambda: seen["n"] >= 3)
    assert part.cancelled and len(part.history) == 1  # stopped at the start of epoch 2
    resumed = finetune(image, labels, base, tmp_path / "part", recipe, resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[1]["train_loss"] == pytest.approx(full.history[1]["train_loss"], rel=1e-5)
    assert resumed.metrics["mDSC"] == pytest.approx(full.metrics["mDSC"], abs=1e-6)


def test_finetune_classifier_from_rois(easy, tmp_path):
    image, _, base = easy
    img = image.copy()
    img[:, 384:] = 0  # right half: empty glass (no signal, as in fluorescence), left half: cells
    rois, k = [], 0
    for name, x0 in (("cells", 40), ("empty", 420)):
        for y0 in range(40, 700, 130):
            rois.append({"type": "Feature", "properties": {"class": name}, "geometry": {
                "type": "Polygon",
                "coordinates": [[[x0, y0], [x0 + 300, y0], [x0 + 300, y0 + 90], [x0, y0 + 90], [x0, y0]]]}})
            k += 1
    path = tmp_path / "rois.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": rois}))
    records = []
    result = finetune(img, path, base, tmp_path / "cls", TrainRecipe(task="classification", epochs=3,
                      steps_per_epoch=10, batch_size=4, lr=1e-2, device="cpu"), on_record=records.append)
    assert records == result.history and [r["epoch"] for r in records] == [1, 2, 3]
    last = result.history[-1]
    assert last["val_samples"] == 16  # 1 held-out ROI per class x 8 points
    assert last["accuracy"] >= 0.9 and last["auc"] >= 0.9, last
    model = load_model(tmp_path / "cls")
    assert model.card.task == "classification" and model.card.class_names == ["cells", "empty"]


def test_fit_probe_from_scribbles(easy):
    image, labels, base = easy
    scribbles = np.zeros_like(labels)
    for y in (40, 200, 360):
        scribbles[y : y + 24, :384] = labels[y : y + 24, :384]
    result = fit_probe(base, image, scribbles, class_names=["background", "cell"], steps=60, hidden=32)
    assert result.n_tiles > 0 and result.losses[-1] < result.losses[0]
    assert result.train_accuracy > 0.8
    # held-out area (never scribbled): balanced accuracy well above the 0.5 of chance
    from napari_muvit.data import Normalizer, open_pyramid

    pyr = open_pyramid(image)
    norm = Normalizer.from_pyramid(pyr)
    hits, totals = np.zeros(2), np.zeros(2)
    for cy in (600, 680):
        for cx in (500, 600, 700):
            img, bbox = pyr.crops((cy, cx), (1, 4), 32, normalizer=norm)
            with torch.no_grad():
                pred = result.model(torch.from_numpy(img[None]), torch.from_numpy(bbox[None])).argmax(1)[0].numpy()
            truth = labels[cy - 15 : cy + 17, cx - 15 : cx + 17] - 1
            for c in (0, 1):
                hits[c] += ((pred == c) & (truth == c)).sum()
                totals[c] += (truth == c).sum()
    assert (hits / totals).mean() > 0.7, hits / totals
    assert result.model.card.head["head"] == "probe" and result.model.card.class_names == ["background", "cell"]


@pytest.fixture(scope="module")
def files(easy, tmp_path_factory):
    import tifffile

    image, labels, base = easy
    d = tmp_path_factory.mktemp("cli")
    tifffile.imwrite(d / "slide.tif", image[:512, :512])
    np.save(d / "labels.npy", labels[:512, :512])
    np.save(d / "wrong.npy", labels[:256, :512])
    np.save(d / "empty.npy", np.zeros((512, 512), np.uint8))
    coarse = d / "coarse"
    save_model(MuViTMAE(levels=(1, 128), **TINY), coarse, card=ModelCard(task="mae", levels=(1, 128), crop_size=32))
    return d, base, coarse


def test_cli_finetune_runs(files, tmp_path, capsys):
    from napari_muvit.cli import main

    d, base, _ = files
    code = main(["finetune", str(d / "slide.tif"), "--labels", str(d / "labels.npy"), "--base", str(base),
                 "--task", "segmentation", "--out", str(tmp_path / "m"), "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "2", "--quiet", "--device", "cpu"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] == 2 and 0 <= out["mDSC"] <= 1
    # a foreign dense label image with 0 = background: --background-class makes 0 a class, not "unlabelled"
    np.save(d / "dense.npy", (np.load(d / "labels.npy") - 1).astype(np.uint8))
    code = main(["finetune", str(d / "slide.tif"), "--labels", str(d / "dense.npy"), "--base", str(base),
                 "--out", str(tmp_path / "dense"), "--background-class", "background", "--classes", "cell",
                 "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--quiet", "--device", "cpu"])
    assert code == 0
    assert load_model(tmp_path / "dense").card.class_names == ["background", "cell"]


@pytest.mark.parametrize("labels, extra, message", [
    ("wrong.npy", [], "shape (256, 512)"),
    ("empty.npy", [], "no labelled pixels"),
    ("labels.npy", ["--classes", "bg,cell,tumour"], "Class 3 (tumour) never occurs"),
    ("labels.npy", ["--classes", "bg"], "only 1 class (bg) exists"),
    ("labels.npy", ["--base", "COARSE"], "level 128 is too coarse"),
    ("labels.npy", ["--levels", "1,8"], "levels"),
])
def test_cli_finetune_bad_input_is_one_line(files, tmp_path, capsys, labels, extra, message):
    from napari_muvit.cli import main

    d, base, coarse = files
    extra = [str(coarse) if e == "COARSE" else e for e in extra]
    args = ["finetune", str(d / "slide.tif"), "--labels", str(d / labels), "--base", str(base),
            "--out", str(tmp_path / "m"), "--epochs", "1", "--device", "cpu", *extra]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
