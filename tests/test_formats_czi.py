"""Zeiss CZI adapter (libCZI through pylibczirw) against mosaics pylibczirw writes."""

import sys

import numpy as np
import pytest

pyczi = pytest.importorskip("pylibCZIrw.czi")

from napari_muvit.data import open_pyramid  # noqa: E402
from napari_muvit.data.czi_reader import open_czi  # noqa: E402


def test_grey_channels_names_pixel_size_and_lazy_levels(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4000, (2, 600, 520), dtype=np.uint16)
    path = tmp_path / "fluo.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for c in range(2):  # two mosaic tiles per channel
            czi.write(a[c, :, :260, None], plane={"C": c, "Z": 0, "T": 0}, location=(0, 0))
            czi.write(a[c, :, 260:, None], plane={"C": c, "Z": 0, "T": 0}, location=(260, 0))
        czi.write_metadata(document_name="fluo", channel_names={0: "DAPI", 1: "GFP"},
                           scale_x=0.3e-6, scale_y=0.3e-6)
    pyr = open_pyramid(path)
    assert pyr.metadata["format"] == "Zeiss CZI"
    assert not pyr.rgb and pyr.n_channels == 2 and pyr.channel_names == ["DAPI", "GFP"]
    assert pyr.dtype == np.uint16 and pyr.shape == (600, 520)
    assert pyr.pixel_size == pytest.approx((0.3, 0.3)) and pyr.unit == "micrometer"
    assert pyr.factors == [(1, 1), (2, 2), (4, 4)]  # lazy averages while the short side is >= 256
    img, bbox = pyr.crops((300, 260), (1, 2), 32)
    np.testing.assert_array_equal(img[0], a[:, 285:317, 245:277])  # across the tile seam
    s = np.floor((np.array([300, 260]) - 0.5) / 2 - 15.5 + 0.5).astype(int)
    coarse = a[:, 2 * s[0]:2 * s[0] + 64, 2 * s[1]:2 * s[1] + 64].reshape(2, 32, 2, 32, 2).mean((2, 4))
    np.testing.assert_allclose(img[1], coarse, rtol=1e-6)
    np.testing.assert_allclose(bbox[1, 0], 2 * s + 0.5)


def test_colour_mosaic_is_rgb_with_white_where_nothing_was_scanned(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "he.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        # Bgr24: CZI stores blue, green, red
        czi.write(rgb[:, :200, ::-1], plane={"C": 0, "Z": 0, "T": 0}, location=(0, 0))
        czi.write(rgb[:150, 200:, ::-1], plane={"C": 0, "Z": 0, "T": 0}, location=(200, 0))
        czi.write_metadata(document_name="he", scale_x=0.25e-6, scale_y=0.25e-6)
    pyr = open_czi(path, name="he")
    assert pyr.rgb and pyr.n_channels == 3 and pyr.channel_names == ["red", "green", "blue"]
    assert pyr.pixel_size == pytest.approx((0.25, 0.25))
    expected = rgb.copy()
    expected[150:, 200:] = 255  # no sub-block there
    full = np.asarray(pyr.arrays[0])
    np.testing.assert_array_equal(full, np.moveaxis(expected, 2, 0))
    img, _ = pyr.crops((150, 200), (1,), 16)
    np.testing.assert_array_equal(img[0], np.moveaxis(expected[143:159, 193:209], 2, 0))


def test_missing_pylibczirw_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "x.czi").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "pylibCZIrw", None)
    with pytest.raises(ValueError, match=r'needs pylibczirw; install it with pip install "napari-muvit\[czi\]"'):
        open_pyramid(tmp_path / "x.czi")


def test_opening_reads_no_pixels_and_a_crop_reads_its_blocks_only(tmp_path, monkeypatch):
    a = np.random.default_rng(2).integers(0, 255, (1, 1500, 1500), dtype=np.uint8)
    path = tmp_path / "big.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        czi.write(a[0, :, :, None], plane={"C": 0, "Z": 0, "T": 0}, location=(0, 0))
    calls: list = []
    real = pyczi.CziReader.read
    monkeypatch.setattr(pyczi.CziReader, "read", lambda self, **kw: calls.append(kw["roi"]) or real(self, **kw))
    pyr = open_pyramid(path)
    assert calls == []
    img, _ = pyr.crops((1200, 1200), (1,), 32)
    np.testing.assert_array_equal(img[0], a[:, 1185:1217, 1185:1217])
    assert calls == [(1024, 1024, 476, 476)]  # the one 1024-px block holding the window (clipped to the slide)
