"""Synthetic multi-scale slides: determinism, context-only labels, OME-Zarr output, CLI."""

import json
import tracemalloc

import numpy as np
import pytest
import zarr
from scipy import ndimage

from napari_muvit.cli import main
from napari_muvit.data import open_pyramid, synthetic_slide, write_synthetic_slide
from napari_muvit.data import synthetic as S


@pytest.fixture(scope="module")
def slide():
    return synthetic_slide(3072, seed=3)


def test_deterministic_and_window_independent(slide):
    img, lab, names = slide
    assert img.dtype == np.uint8 and lab.dtype == np.uint8 and img.shape == (3072, 3072)
    assert names == ["background", "bright-disc region", "dark-disc region", "ringed-disc region"]
    again, lab2 = S.render_window(1000, 2000, (300, 500), seed=3)
    np.testing.assert_array_equal(again, img[1000:1300, 2000:2500])
    np.testing.assert_array_equal(lab2, lab[1000:1300, 2000:2500])
    other, _ = S.render_window(1000, 2000, (300, 500), seed=4)
    assert np.mean(other != again) > 0.5


def test_cells_identical_and_labelled_by_region(slide):
    img, lab, _ = slide
    assert set(np.unique(lab)) == {1, 2, 3, 4}  # value k + 1 = class k: background 1, cells 2..4, no 0
    comps, n = ndimage.label(lab > 1)
    areas = np.bincount(comps.ravel())[1:]
    inner = ndimage.find_objects(comps)
    # every cell away from the border is the same 81-pixel disc (radius 5)
    sizes = [a for a, sl in zip(areas, inner) if sl[0].start > 0 and sl[1].start > 0
             and sl[0].stop < 3072 and sl[1].stop < 3072]
    assert len(sizes) > 3000 and set(sizes) == {81}
    regions = np.stack([S.region_type(np.full(3072, y), np.arange(3072), 3) for y in range(0, 3072, 8)])
    cells = lab[::8] > 1
    assert np.mean(lab[::8][cells] == regions[cells] + 1) > 0.99  # a cell's class is its region's type
    assert set(np.unique(regions)) == {1, 2, 3}


def _structure_mask(shape, seed):
    """Where the context discs are (rendered alone: no noise, no cells)."""
    discs = np.zeros(shape, np.float32)
    S._draw_structures(discs, S._region_map(0, 0, shape, seed, 3, S.REGION_SIZE), 0, 0, seed, 3, S.REGION_SIZE)
    return discs != 0


def _crop_features(img, lab, level, n, seed, crop=64):
    """Simple statistics of the ``crop`` px window at ``level`` (area means) centred on ``n`` random cells."""
    ys, xs = np.nonzero(lab > 1)
    pick = np.random.default_rng(seed).choice(len(ys), n, replace=False)
    ys, xs = ys[pick], xs[pick]
    side = img.shape[0] // level
    coarse = img.astype(np.float32).reshape(side, level, side, level).mean(axis=(1, 3))
    padded = np.pad(coarse, crop // 2, mode="reflect")
    feats = []
    for y, x in zip(ys // level, xs // level):
        c = padded[y: y + crop, x: x + crop]
        feats.append([c.mean(), c.std(), c.min(), c.max(), *np.percentile(c, [5, 95])])
    return np.array(feats), lab[ys, xs].astype(np.int64) - 1  # class index = region type


def _softmax_regression_accuracy(train, test, steps=1500):
    """Held-out accuracy of a linear softmax classifier fitted by plain gradient descent."""
    (xa, ya), (xb, yb) = train, test
    mu, sd = xa.mean(0), xa.std(0) + 1e-6
    a = np.c_[(xa - mu) / sd, np.ones(len(xa))]
    b = np.c_[(xb - mu) / sd, np.ones(len(xb))]
    w, onehot = np.zeros((a.shape[1], 4)), np.eye(4)[ya]
    for _ in range(steps):
        z = a @ w
        p = np.exp(z - z.max(1, keepdims=True))
        w -= 0.5 * a.T @ (p / p.sum(1, keepdims=True) - onehot) / len(a)
    return float(np.mean((b @ w).argmax(1) == yb))


def test_regions_look_alike_up_close_but_differ_at_coarse_scale(slide):
    img, lab, _ = slide
    regions = np.stack([S.region_type(np.full(3072, y), np.arange(3072), 3) for y in range(0, 3072, 4)])
    means = [img[::4][regions == k].mean() for k in (1, 2, 3)]
    assert max(means) - min(means) < 5.0, means  # grey levels out of 255: discs are sparse
    discs = _structure_mask(img.shape, 3)
    # between discs, every region type is the same background (the cells carry no class either)
    between = [img[::4][(regions == k) & ~discs[::4] & (lab[::4] == 1)].mean() for k in (1, 2, 3)]
    assert max(between) - min(between) < 0.5, between
    sums = np.pad(discs.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys, xs = np.nonzero(lab > 1)
    pick = np.random.default_rng(0).choice(len(ys), 1500, replace=False)
    ys, xs = ys[pick], xs[pick]

    def seen(half):
        y0, y1 = np.clip(ys - half, 0, 3072), np.clip(ys + half, 0, 3072)
        x0, x1 = np.clip(xs - half, 0, 3072), np.clip(xs + half, 0, 3072)
        return np.mean(sums[y1, x1] - sums[y0, x1] - sums[y1, x0] + sums[y0, x0] > 0)

    assert seen(32) < 0.3  # a level-1 64 px crop around a cell mostly shows no structure at all
    assert seen(512) > 0.97  # a level-16 64 px crop (1024 world px) almost always does


def test_region_type_learnable_from_level_16_not_from_level_1(slide):
    img, lab, _ = slide
    held_img, held_lab, _ = synthetic_slide(3072, seed=11)
    majority = np.bincount(held_lab[held_lab > 1]).max() / np.count_nonzero(held_lab > 1)
    acc = {level: _softmax_regression_accuracy(_crop_features(img, lab, level, 800, 0),
                                               _crop_features(held_img, held_lab, level, 800, 1))
           for level in (1, 16)}
    assert acc[16] > 0.8 and acc[16] > majority + 0.2, (acc, majority)
    # up close: barely better than the majority guess (a crop next to a ring sees part of its rim)
    assert acc[1] < majority + 0.1 and acc[16] > acc[1] + 0.2, (acc, majority)


def test_written_ome_zarr(tmp_path, slide):
    path = write_synthetic_slide(tmp_path / "s.zarr", 3072, seed=3, chunk=512)
    root = zarr.open_group(str(path), mode="r")
    assert root.metadata.zarr_format == 3 and root.attrs["ome"]["version"] == "0.5"
    assert root.attrs["muvit"]["class_names"] == slide[2]
    assert root.attrs["muvit"]["generator_version"] == S.GENERATOR_VERSION == 4
    assert list(root["labels"].attrs["ome"]["labels"]) == ["ground_truth"]
    gt = root["labels/ground_truth"].attrs["ome"]
    assert [p["class"] for p in gt["image-label"]["properties"]] == slide[2]
    assert [c["label-value"] for c in gt["image-label"]["colors"]] == [1, 2, 3, 4]
    image, labels = open_pyramid(path), open_pyramid(path / "labels" / "ground_truth")
    assert image.level_factors == [1, 2, 4, 8, 16] and labels.level_factors == image.level_factors
    np.testing.assert_array_equal(image.arrays[0][0].compute(), slide[0])
    np.testing.assert_array_equal(labels.arrays[0][0].compute(), slide[1])
    ref = slide[0].astype(np.float64).reshape(768, 4, 768, 4).mean(axis=(1, 3))
    assert np.abs(image.arrays[2][0].compute() - ref).max() <= 1.0  # rounded 2x2 means of means
    lab2 = labels.arrays[1][0].compute()
    np.testing.assert_array_equal(lab2, slide[1].reshape(1536, 2, 1536, 2).max(axis=(1, 3)))


def test_write_memory_is_bounded(tmp_path):
    tracemalloc.start()
    write_synthetic_slide(tmp_path / "m.zarr", 2048, seed=1, chunk=256)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # the whole slide as float32 alone would be 16 MiB; chunk-wise writing stays far below
    assert peak < 8 * 2**20, peak


def test_cli(tmp_path, capsys):
    out = tmp_path / "c.zarr"
    assert main(["synth", str(out), "--size", "512", "--seed", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert attrs["muvit"]["seed"] == 2 and attrs["muvit"]["size"] == 512
    assert main(["synth", str(out), "--size", "512"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-muvit: error:") and "--overwrite" in err and "\n" not in err
    assert main(["synth", str(out), "--size", "512", "--seed", "5", "--overwrite"]) == 0
    assert json.loads((out / "zarr.json").read_text())["attributes"]["muvit"]["seed"] == 5
    assert main(["synth", str(tmp_path / "d.zarr"), "--size", "10"]) == 2
    assert not (tmp_path / "d.zarr").exists()
    keep = tmp_path / "my_data"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    assert main(["synth", str(keep), "--size", "512", "--overwrite"]) == 2
    assert "not a zarr store" in capsys.readouterr().err and (keep / "notes.txt").exists()


def test_write_progress_counts_up_to_the_chunk_total(tmp_path):
    calls = []
    write_synthetic_slide(tmp_path / "p.zarr", 600, seed=0, kind="noise", chunk=256,
                          progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (9, 9) and len(calls) == 9
