"""Training building blocks: geometry-consistent augmentation, nested sampling, schedule, metrics,
checkpoints, label checks and region split."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
import torch

from napari_muvit.engine.training.annotations import (
    check_classes,
    open_label_image,
    read_rois,
    region_split,
)
from napari_muvit.engine.training.augment import dihedral
from napari_muvit.engine.training.metrics import ConfusionMatrix, binary_auc, multiclass_auc
from napari_muvit.engine.training.sampling import AreaSampler, nested_centers
from napari_muvit.engine.training.schedule import warmup_cosine
from napari_muvit.engine.training.state import History, load_checkpoint, save_checkpoint


def _world(y, x):
    return np.sin(y / 7.0) + 0.5 * np.cos(x / 5.0) + 0.01 * y


def _crop(center, level, size=8):
    start = np.floor((center - (level - 1) / 2) / level - (size - 1) / 2 + 0.5).astype(int)
    ys = start[0] * level + np.arange(size) * level + (level - 1) / 2
    xs = start[1] * level + np.arange(size) * level + (level - 1) / 2
    return _world(ys[:, None], xs[None, :]), np.array([[ys[0], xs[0]], [ys[-1], xs[-1]]])


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_dihedral_keeps_world_geometry_at_every_level(k, flip):
    center = np.array([100.0, 50.0])
    crops = [_crop(center, 1), _crop(center + [3.0, -2.0], 2)]
    img = np.stack([c[0] for c in crops])[:, None]
    bbox = np.stack([c[1] for c in crops])
    label = (img[0, 0] > 0).astype(np.int64)
    out_img, out_box, out_label = dihedral(img, bbox, k, flip, label)
    cy, cx = bbox[0].mean(0)
    np.testing.assert_allclose(out_box[0].mean(0), [cy, cx])  # the finest crop keeps its centre
    t = np.arange(8) / 7
    for lvl in range(2):
        ys = out_box[lvl, 0, 0] + t[:, None] * (out_box[lvl, 1, 0] - out_box[lvl, 0, 0])
        xs = out_box[lvl, 0, 1] + t[None, :] * (out_box[lvl, 1, 1] - out_box[lvl, 0, 1])
        ys, xs = np.broadcast_arrays(ys, xs)
        y, x = ys.copy(), xs.copy()  # undo the map: k inverse quarter turns, then the flip
        for _ in range(k):
            y, x = cy + (x - cx), cx - (y - cy)
        if flip:
            x = 2 * cx - x
        np.testing.assert_allclose(out_img[lvl, 0], _world(y, x), atol=1e-9)
    np.testing.assert_array_equal(out_label, (out_img[0, 0] > 0).astype(np.int64))


def test_nested_centers_always_contain_the_finer_crop():
    rng = np.random.default_rng(0)
    levels, size = (1, 4, 16), 32
    fine = rng.uniform(0, 5000, size=(500, 2))
    centers = nested_centers(rng, fine, levels, size)
    from napari_muvit.data.geometry import crop_start_index, crop_world_extent

    for a, b in zip(range(2), range(1, 3)):
        lo_a, hi_a = crop_world_extent(crop_start_index(centers[:, a], levels[a], size), levels[a], size)
        lo_b, hi_b = crop_world_extent(crop_start_index(centers[:, b], levels[b], size), levels[b], size)
        assert np.all(lo_b <= lo_a) and np.all(hi_b >= hi_a)
    # not all concentric: the coarse crop moves by up to (size*(16-4)/2 - 16) = 176 px
    shift = np.abs(centers[:, 2] - centers[:, 1])
    assert shift.max() > 100 and shift.max() <= 176
    assert np.allclose(nested_centers(rng, fine, levels, size, shift=0.0)[:, 2], fine)


def test_area_sampler_stays_in_allowed_cells():
    mask = np.zeros((10, 10), bool)
    mask[2, 3] = mask[7, 7] = True
    pts = AreaSampler(mask, cell=16).sample(np.random.default_rng(1), 2000)
    cells = np.floor((pts + 0.5) / 16).astype(int)
    assert set(map(tuple, cells)) == {(2, 3), (7, 7)}
    with pytest.raises(ValueError, match="no foreground"):
        AreaSampler(np.zeros((3, 3), bool), 8)


def test_warmup_cosine_schedule():
    lrs = [warmup_cosine(s, 100, 10, 0.01) for s in range(120)]
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:11]))  # warm-up rises
    assert lrs[10] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in zip(lrs[10:100], lrs[11:101]))  # cosine falls
    assert lrs[100] == pytest.approx(0.01) and lrs[119] == pytest.approx(0.01)
    assert lrs[55] == pytest.approx(0.01 + 0.99 * 0.5, abs=1e-9)  # half-way down the cosine


def test_dice_accuracy_and_auc_against_hand_counts():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 1, 1, 2, -1]), np.array([0, 1, 1, 1, 1, 2]))
    np.testing.assert_allclose(cm.dice(), [2 / 3, 2 / 3, 0.0])
    assert cm.mean_dice() == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert cm.accuracy() == pytest.approx(3 / 5)
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    score = truth * 0.5 + rng.normal(size=200)
    pos, neg = score[truth == 1], score[truth == 0]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert binary_auc(truth, score) == pytest.approx(brute)
    assert binary_auc([1, 1, 0], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    probs = np.eye(3)[[0, 1, 2, 2]] * 0.8 + 0.05
    assert multiclass_auc([0, 1, 2, 2], probs) == pytest.approx(1.0)
    assert np.isnan(binary_auc([1, 1], [0.1, 0.2]))


def test_checkpoint_is_atomic_and_weights_only(tmp_path):
    rng = np.random.default_rng(3)
    rng.random(5)
    path = save_checkpoint(tmp_path / "c" / "checkpoint.pt", model={"w": torch.ones(2)}, step=7,
                           rng={"sampler": rng.bit_generator.state, "torch": torch.get_rng_state()})
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]  # no temporary left
    state = load_checkpoint(path)
    assert state["step"] == 7 and torch.equal(state["model"]["w"], torch.ones(2))
    other = np.random.default_rng(0)
    other.bit_generator.state = state["rng"]["sampler"]
    assert other.random() == rng.random()
    with pytest.raises(FileNotFoundError, match="without --resume"):
        load_checkpoint(tmp_path / "missing.pt")


def test_history_csv_round_trip_and_plot(tmp_path):
    h = History()
    for s in range(1, 6):
        h.append(step=s, loss=1.0 / s, lr=1e-3)
    h.write_csv(tmp_path / "h.csv")
    back = History.read_csv(tmp_path / "h.csv")
    assert [r["step"] for r in back.rows] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(back.column("loss"), [1, 0.5, 1 / 3, 0.25, 0.2])
    png = h.plot(tmp_path / "loss.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_label_checks_name_the_problem():
    shape = (64, 64)
    with pytest.raises(ValueError, match=r"shape \(32, 64\).*\(64, 64\)"):
        open_label_image(np.zeros((32, 64), np.uint8), shape)
    empty = open_label_image(np.zeros(shape, np.uint8), shape)
    with pytest.raises(ValueError, match="no labelled pixels"):
        check_classes(empty, None, 8)
    lab = np.zeros(shape, np.uint8)
    lab[:10] = 1
    lab[20:30] = 3
    with pytest.raises(ValueError, match="Class 2"):
        check_classes(open_label_image(lab, shape), None, 8)
    with pytest.raises(ValueError, match="value 3 but only 2 classes"):
        check_classes(open_label_image(lab, shape), ["a", "b"], 8)
    lab[40:50] = 2
    summary, names = check_classes(open_label_image([lab, lab[::2, ::2]], shape), None, 8)
    assert names == ["class 1", "class 2", "class 3"]
    assert summary.totals[:4].tolist() == [64 * 34, 640, 640, 640]


def test_region_split_is_disjoint_and_by_blocks():
    lab = np.zeros((256, 256), np.uint8)
    lab[::3, ::5] = 1
    lab[1::3, ::7] = 2
    summary, _ = check_classes(open_label_image(lab, lab.shape), None, 8)
    train, val = region_split(summary, block_cells=4, val_fraction=0.25, seed=0)
    assert not (train & val).any() and (train | val).sum() == summary.labelled.sum()
    assert 0.1 < val.sum() / summary.labelled.sum() < 0.4
    blocks = val.reshape(8, 4, 8, 4).any(axis=(1, 3))  # every validation block is whole
    assert np.array_equal(val.reshape(8, 4, 8, 4).all(axis=(1, 3)), blocks)


def test_read_rois_geojson_and_csv(tmp_path):
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[10, 20], [50, 20], [50, 40], [10, 20]]]},
         "properties": {"classification": {"name": "tumour"}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 6]}, "properties": {"class": "stroma"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]}, "properties": {}},
    ]}
    (tmp_path / "r.geojson").write_text(json.dumps(doc))
    rois = read_rois(tmp_path / "r.geojson")
    assert [r.label for r in rois] == ["tumour", "stroma"]
    assert rois[0].bounds() == (20.0, 10.0, 40.0, 50.0)  # (y0, x0, y1, x1) from GeoJSON's x, y
    pts = rois[0].sample_points(np.random.default_rng(0), 50)
    assert rois[0].contains(pts).all()
    (tmp_path / "r.csv").write_text("y_min,x_min,y_max,x_max,class\n0,0,10,20,a\n5,5,6,6,b\n")
    assert [r.bounds() for r in read_rois(tmp_path / "r.csv")] == [(0, 0, 10, 20), (5, 5, 6, 6)]
    (tmp_path / "bad.csv").write_text("u,v,class\n1,2,a\n")
    with pytest.raises(ValueError, match="needs columns"):
        read_rois(tmp_path / "bad.csv")


def test_auc_pairs_helper_matches_combinations():
    # ties between a positive and a negative count one half
    truth, score = [0, 1, 0, 1], [0.2, 0.2, 0.1, 0.9]
    pairs = [(i, j) for i, j in combinations(range(4), 2) if truth[i] != truth[j]]
    wins = sum(1.0 if score[p] > score[n] else 0.5 if score[p] == score[n] else 0.0
               for i, j in pairs for p, n in [(i, j) if truth[i] else (j, i)])
    assert binary_auc(truth, score) == pytest.approx(wins / len(pairs))


def test_label_image_from_ome_zarr_labels_group(tmp_path):
    from napari_muvit.data import synthetic_slide, write_synthetic_slide

    write_synthetic_slide(tmp_path / "s.zarr", 512, seed=1, chunk=256)
    _, truth, _ = synthetic_slide(512, seed=1)
    for path in (tmp_path / "s.zarr", tmp_path / "s.zarr" / "labels" / "ground_truth"):
        labels = open_label_image(path, (512, 512))
        np.testing.assert_array_equal(np.asarray(labels), truth)
    np.save(tmp_path / "l.npy", truth)
    np.testing.assert_array_equal(np.asarray(open_label_image(tmp_path / "l.npy", (512, 512))), truth)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_label_image(tmp_path / "missing.tif", (512, 512))
