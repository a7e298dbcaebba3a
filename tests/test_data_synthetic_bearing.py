"""The 'bearing' synthetic kind: a cell's class is the side on which its nearest landmark lies."""

import numpy as np
import pytest
import zarr
from scipy import ndimage

from napari_muvit.cli import main
from napari_muvit.data import synthetic as S
from napari_muvit.data import synthetic_bearing as B


@pytest.fixture(scope="module")
def slide():
    return S.synthetic_slide(1536, seed=5, kind="bearing")


def _landmarks(seed, size):
    """Every landmark centre that can be nearest to a point of the slide, listed independently."""
    n = size // B.LANDMARK_GRID + 2
    g = np.arange(-1, n + 1)
    gy, gx = (a.ravel() for a in np.meshgrid(g, g, indexing="ij"))
    return np.stack(B.landmark_centres(gy, gx, seed, S._hash_uniform), 1)


def test_window_independent_and_deterministic(slide):
    img, lab, names = slide
    assert names == ["background", "landmark above", "landmark right", "landmark below", "landmark left"]
    a, b = S.render_window(700, 300, (300, 200), 5, "bearing")
    np.testing.assert_array_equal(a, img[700:1000, 300:500])
    np.testing.assert_array_equal(b, lab[700:1000, 300:500])
    img2, lab2, _ = S.synthetic_slide(1536, seed=6, kind="bearing")
    assert (lab2 != lab).mean() > 0.01  # another seed, another slide


def test_each_cell_labelled_by_the_bearing_of_its_nearest_landmark(slide):
    img, lab, _ = slide
    marks = _landmarks(5, 1536)
    assert set(np.unique(lab)) == {1, 2, 3, 4, 5}  # value k + 1 = class k: background 1, no 0
    cells, n = ndimage.label(lab > 1)
    centres = np.array(ndimage.center_of_mass(lab > 1, cells, range(1, n + 1)))
    classes = np.array(ndimage.maximum(lab, cells, range(1, n + 1))).astype(int) - 1  # class = value - 1
    full = [i for i, (cy, cx) in enumerate(centres) if 8 <= cy < 1528 and 8 <= cx < 1528]  # not cut by the edge
    assert len(full) > 800 and set(classes[full]) == {1, 2, 3, 4}
    for i in full:
        cy, cx = centres[i]
        d = marks - [cy, cx]
        dy, dx = d[np.argmin((d**2).sum(1))]
        expected = 1 if -dy >= abs(dx) else 2 if dx > abs(dy) else 3 if dy >= abs(dx) else 4
        assert classes[i] == expected, (cy, cx, dy, dx)
        assert np.hypot(dy, dx) > B.CLEARANCE
    # the classes are roughly balanced (no side dominates)
    counts = np.bincount(classes[full], minlength=5)[1:]
    assert counts.min() > 0.5 * counts.max(), counts


def test_cells_look_identical_whatever_their_class(slide):
    img, lab, _ = slide
    profiles = {}
    for k in (1, 2, 3, 4):
        cells, n = ndimage.label(lab == k + 1)
        peaks = ndimage.maximum(img, cells, range(1, n + 1))
        sizes = ndimage.sum(np.ones_like(lab), cells, range(1, n + 1))
        profiles[k] = (np.median(peaks), np.median(sizes))
    peaks = [p for p, _ in profiles.values()]
    sizes = [s for _, s in profiles.values()]
    assert max(peaks) - min(peaks) <= 10 and max(sizes) == min(sizes), profiles


def test_fine_crop_rarely_sees_a_landmark_but_the_coarse_one_always_does(slide):
    """A 64 px level-1 crop around a cell holds no landmark; a 1024 px level-16 crop holds one or more."""
    img, lab, _ = slide
    marks = _landmarks(5, 1536)
    cells, n = ndimage.label(lab > 1)
    centres = np.array(ndimage.center_of_mass(lab > 1, cells, range(1, n + 1)))
    near = np.abs(centres[:, None, :] - marks[None]).max(-1)  # Chebyshev distance cell -> landmark centre
    fine_sees = (near < 32 + B.LANDMARK_R).any(1).mean()
    coarse_sees = (near < 512).sum(1)
    assert fine_sees < 0.05, fine_sees
    assert coarse_sees.min() >= 1


def test_cli_writes_bearing_slide_with_its_class_names(tmp_path):
    out = tmp_path / "b.zarr"
    assert main(["synth", str(out), "--size", "512", "--kind", "bearing", "--seed", "2", "--chunk", "256"]) == 0
    gt = zarr.open_group(str(out / "labels" / "ground_truth"), mode="r")
    props = gt.attrs["ome"]["image-label"]["properties"]
    assert [p["class"] for p in props] == S.class_names(kind="bearing")
    colors = {c["label-value"]: c["rgba"] for c in gt.attrs["ome"]["image-label"]["colors"]}
    assert sorted(colors) == [1, 2, 3, 4, 5]  # value k + 1 = class k; 0 (unlabelled) has no class
    assert colors[1][3] == 0 and colors[5] == B.CLASS_COLORS[4]
    img, lab, _ = S.synthetic_slide(512, seed=2, kind="bearing")
    np.testing.assert_array_equal(np.asarray(gt["s0"]), lab)
