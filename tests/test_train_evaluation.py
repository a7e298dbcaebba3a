"""Whole-slide scoring against ground truth in the one label convention (value k + 1 = class k, 0 = unlabelled)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_muvit.data import open_pyramid, synthetic_slide
from napari_muvit.engine.testing import PixelSegmenter
from napari_muvit.engine.training.annotations import IGNORE
from napari_muvit.engine.training.evaluation import evaluate_slide, label_classes
from napari_muvit.engine.training.metrics import ConfusionMatrix

SIZE = 32
# a purely local model (logit k = w[k] * pixel + b[k] on raw grey levels): its prediction of every pixel is
# known without running it tile by tile, so the expected Dice is computed independently
W = (0.0, 0.05, 0.1, 0.15)  # class 0 below grey 80, 1 up to 120, 2 up to 160, 3 above
B = (0.0, -4.0, -10.0, -18.0)


@pytest.fixture(scope="module")
def slide():
    image, labels, _ = synthetic_slide(768, seed=4)
    pixel = image.astype(np.float32)[None]
    prediction = np.argmax(np.asarray(W, np.float32)[:, None, None] * pixel + np.asarray(B, np.float32)[:, None, None],
                           axis=0)
    return image, labels, prediction


def _old_convention_dice(old_truth, prediction, k=4):
    """What scoring did before: the truth *is* the class index (generator 2: background 0, types 1..3)."""
    cm = ConfusionMatrix(k, IGNORE)
    cm.update(old_truth, prediction)
    return cm.dice(), cm.mean_dice(), cm.accuracy()


def test_label_classes_maps_values_to_classes_and_zero_to_ignore():
    np.testing.assert_array_equal(label_classes(np.array([[0, 1], [2, 5]], np.uint8)), [[IGNORE, 0], [1, 4]])
    with pytest.raises(ValueError, match="negative label value -3"):
        label_classes(np.array([1, -3]))


def test_dice_against_new_ground_truth_equals_old_convention_shifted_by_one(slide):
    image, labels, prediction = slide
    assert sorted(np.unique(labels).tolist()) == [1, 2, 3, 4]
    old_truth = labels.astype(np.int64) - 1  # the same slide as generator version 2 stored it
    assert sorted(np.unique(prediction).tolist()) == [0, 1, 2, 3]  # every class predicted somewhere
    model = PixelSegmenter(w=W, b=B, levels=(1, 4), crop=SIZE)
    got = evaluate_slide(model, open_pyramid(image), labels, SIZE)
    dice, mdsc, acc = _old_convention_dice(old_truth, prediction)
    assert got["tiles"] == (768 // SIZE) ** 2
    np.testing.assert_array_equal(got["dice"], dice)
    assert got["mDSC"] == mdsc and got["accuracy"] == acc
    # and by hand, for the background class: 2 |P & T| / (|P| + |T|)
    p, t = prediction == 0, labels == 1
    assert got["dice"][0] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()), abs=1e-12)
    assert 0.0 < got["dice"][0] < 1.0


def test_unlabelled_pixels_are_not_scored(slide):
    image, labels, prediction = slide
    partial = labels.copy()
    partial[:, 384:] = 0  # right half unlabelled
    model = PixelSegmenter(w=W, b=B, levels=(1, 4), crop=SIZE)
    got = evaluate_slide(model, open_pyramid(image), partial, SIZE)
    dice, mdsc, acc = _old_convention_dice(labels[:, :384].astype(np.int64) - 1, prediction[:, :384])
    np.testing.assert_array_equal(got["dice"], dice)
    assert got["mDSC"] == mdsc and got["accuracy"] == acc
