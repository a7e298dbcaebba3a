"""One label convention for everything the project writes: synthetic ground truth and predictions share
label values (k + 1 = class k, 0 = unlabelled), class names and colours; training reads the ground truth
as it is, and ground truth from older generators is refused with one sentence or read when told 0 is a class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from napari_muvit.cli import main
from napari_muvit.data import synthetic as S
from napari_muvit.data import synthetic_slide, write_synthetic_slide
from napari_muvit.data.label_store import stored_class_names
from napari_muvit.model import ModelCard, load_model, save_model
from napari_muvit.model.mae import MuViTMAE

TINY = dict(patch_size=8, dim=48, num_layers=1, heads=2, dim_decoder=48, num_layers_decoder=1)
NAMES = ["background", "bright-disc region", "dark-disc region", "ringed-disc region"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 768 px slide holding every class (seed 4), one holding background + two types (seed 0), a tiny MAE."""
    root = tmp_path_factory.mktemp("labels")
    write_synthetic_slide(root / "all.zarr", 768, seed=4, chunk=256)
    write_synthetic_slide(root / "some.zarr", 768, seed=0, chunk=256)
    torch.manual_seed(0)
    save_model(MuViTMAE(levels=(1, 4), **TINY), root / "mae", card=ModelCard(task="mae", levels=(1, 4), crop_size=32))
    return root


def _image_label(group) -> dict:
    return group.attrs["ome"]["image-label"]


def test_ground_truth_values_and_metadata_read_by_zarr_and_ome_zarr_py(world):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    gt = zarr.open_group(str(world / "all.zarr" / "labels" / "ground_truth"), mode="r")
    values = np.asarray(gt["s0"])
    np.testing.assert_array_equal(values, synthetic_slide(768, seed=4)[1])
    assert sorted(np.unique(values).tolist()) == [1, 2, 3, 4]  # background 1, region types 2..4, no 0
    assert np.mean(values == 1) > 0.9  # background is most of the slide
    for k in range(1, len(gt.attrs["ome"]["multiscales"][0]["datasets"])):
        assert np.asarray(gt[f"s{k}"]).min() >= 1  # max-downsampled levels keep the convention
    label = _image_label(gt)
    assert label["properties"] == [{"label-value": k + 1, "class": n} for k, n in enumerate(NAMES)]
    assert label["colors"] == [{"label-value": k + 1, "rgba": c} for k, c in enumerate(S.CLASS_COLORS)]
    assert gt.attrs["muvit"]["generator_version"] == S.GENERATOR_VERSION == 4

    nodes = list(Reader(parse_url(str(world / "all.zarr" / "labels" / "ground_truth")))())
    node = next(n for n in nodes if n.metadata.get("name") == "ground_truth")
    assert {v: p["class"] for v, p in node.metadata["properties"].items()} == {1: NAMES[0], 2: NAMES[1], 3: NAMES[2],
                                                                             4: NAMES[3]}
    assert node.metadata["color"][1] == [0.0, 0.0, 0.0, 0.0]  # background transparent, as in a prediction
    np.testing.assert_allclose(node.metadata["color"][2], np.array([230, 80, 60, 255]) / 255)
    np.testing.assert_array_equal(np.asarray(node.data[0]), values)


def test_ground_truth_and_demo_prediction_agree_value_for_value(tmp_path):
    """The demo model's prediction store and the slide's ground truth: the same image-label block, and the
    same value at (almost) every predicted pixel; unpredicted pixels are 0 in the prediction only."""
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe

    slide = write_synthetic_slide(tmp_path / "s.zarr", 1024, seed=4, chunk=256)
    region = (384, 640, 384, 640)
    result = predict(Recipe(source=str(slide), model="demo", region=region, out=str(tmp_path / "p.zarr"),
                            device="cpu"))
    assert result.complete
    pred_group = zarr.open_group(str(tmp_path / "p.zarr" / "labels" / "prediction"), mode="r")
    gt_group = zarr.open_group(str(slide / "labels" / "ground_truth"), mode="r")
    pred_label, gt_label = _image_label(pred_group), _image_label(gt_group)
    assert gt_label["properties"] == pred_label["properties"] and gt_label["colors"] == pred_label["colors"]
    pred, gt = np.asarray(pred_group["0"]), np.asarray(gt_group["s0"])
    inside = (slice(384, 640), slice(384, 640))
    p, g = pred[inside], gt[inside]
    assert p.min() >= 1 and np.count_nonzero(pred) == 256 * 256  # 0 = not predicted: only outside the region
    cells = g > 1
    assert cells.sum() > 1000
    # measured: 99.2 % of all pixels and 81 % of cell pixels carry the same value
    assert np.mean(p == g) > 0.95 and np.mean(p[cells] == g[cells]) > 0.6


def test_class_names_come_from_the_store(world):
    gt = world / "all.zarr" / "labels" / "ground_truth"
    for path in (world / "all.zarr", world / "all.zarr" / "labels", gt):
        assert stored_class_names(path) == NAMES
    assert stored_class_names(gt, ["a", "b", "c", "d"]) == ["a", "b", "c", "d"]  # given names win
    # region types a slide never shows beyond its largest value are left out (values 1..3 here)
    assert stored_class_names(world / "some.zarr") == NAMES[:3]
    assert stored_class_names(world / "mae") is None and stored_class_names(np.zeros((2, 2))) is None
    with pytest.raises(ValueError, match=r"already stores its background class as label value 1.*--background-class"):
        stored_class_names(gt, background_class="background")


def _finetune(world, labels, out, *extra):
    return main(["finetune", str(world / "all.zarr"), "--labels", str(labels), "--base", str(world / "mae"),
                 "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--device", "cpu",
                 "--quiet", *extra])


def test_finetune_on_ground_truth_needs_no_background_class(world, tmp_path, capsys):
    assert _finetune(world, world / "all.zarr" / "labels" / "ground_truth", tmp_path / "seg") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model = load_model(tmp_path / "seg")
    assert model.card.class_names == NAMES and model.num_classes == 4
    assert summary["steps"] == 2
    # the old way now contradicts the store: one sentence, exit 2, no model
    assert _finetune(world, world / "all.zarr", tmp_path / "bg", "--background-class", "background") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-muvit: error:") and "\n" not in err and "label value 1" in err
    assert not (tmp_path / "bg").exists()


def _as_generator_v2(src, dst):
    """Rewrite a slide as generator version 2 wrote it: background 0, region types 1..3, image-label values k."""
    import shutil

    shutil.copytree(src, dst)
    root = zarr.open_group(str(dst), mode="r+")
    gt = root["labels/ground_truth"]
    for k in range(len(gt.attrs["ome"]["multiscales"][0]["datasets"])):
        gt[f"s{k}"][...] = np.asarray(gt[f"s{k}"]) - 1
    ome = gt.attrs["ome"]
    label = ome["image-label"]
    label["colors"] = [{**c, "label-value": c["label-value"] - 1} for c in label["colors"]]
    label["properties"] = [{**p, "label-value": p["label-value"] - 1} for p in label["properties"]]
    gt.attrs.update({"ome": ome, "muvit": {**gt.attrs["muvit"], "generator_version": 2}})
    root.attrs.update({"muvit": {**root.attrs["muvit"], "generator_version": 2}})
    return dst


def test_older_generator_ground_truth_refused_or_read_with_background_class(world, tmp_path, capsys):
    old = _as_generator_v2(world / "all.zarr", tmp_path / "old.zarr")
    with pytest.raises(ValueError, match="generator version 2, where 0 is the background class"):
        stored_class_names(old)
    assert _finetune(world, old, tmp_path / "refused") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "napari-muvit synth" in err and "--background-class" in err
    assert not (tmp_path / "refused").exists()
    # told that 0 is a class, the old store trains the same four classes under their stored names
    assert stored_class_names(old, background_class="background") == NAMES[1:]
    assert _finetune(world, old, tmp_path / "old_seg", "--background-class", "background") == 0
    assert load_model(tmp_path / "old_seg").card.class_names == NAMES
