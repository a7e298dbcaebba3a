"""Nested crops: exact levels, resampled levels, padding, normalisation, errors; real tissue image."""

import dask.array as da
import numpy as np
import pytest
import skimage.data
from skimage.transform import downscale_local_mean

from napari_muvit.data import Normalizer, foreground_mask, open_pyramid


def _start(c, f, size):
    return int(np.floor((c - (f - 1) / 2) / f - (size - 1) / 2 + 0.5))


@pytest.fixture(scope="module")
def ihc():
    return skimage.data.immunohistochemistry()  # (512, 512, 3) uint8 IHC tissue, ships with scikit-image


def test_real_tissue_pyramid_crops(ihc):
    pyr = open_pyramid(ihc, name="ihc", min_size=64)
    assert pyr.rgb and pyr.shape == (512, 512) and pyr.level_factors == [1, 2, 4, 8, 16]
    img, bbox, valid = pyr.crops((256, 300), (1, 2, 8), 32, return_valid=True)
    assert img.shape == (3, 3, 32, 32) and bbox.shape == (3, 2, 2) and valid.all()
    ref = {f: np.moveaxis(downscale_local_mean(ihc.astype(np.float64), (f, f, 1)), 2, 0) for f in (1, 2, 8)}
    for j, f in enumerate((1, 2, 8)):
        sy, sx = _start(256, f, 32), _start(300, f, 32)
        np.testing.assert_allclose(img[j], ref[f][:, sy:sy + 32, sx:sx + 32], atol=1e-3)
        np.testing.assert_allclose(bbox[j, 0], [sy * f + (f - 1) / 2, sx * f + (f - 1) / 2])
        np.testing.assert_allclose(bbox[j, 1] - bbox[j, 0], [31 * f, 31 * f])


def test_real_tissue_foreground(ihc):
    pyr = open_pyramid(ihc, min_size=64)
    mask, level = foreground_mask(pyr)
    assert level == 8 and mask.shape == (64, 64)
    # brightfield: tissue (foreground) is darker than the background it excludes
    grey = downscale_local_mean(ihc.mean(axis=2), (8, 8))
    assert grey[mask].mean() < grey[~mask].mean() - 20
    assert 0.2 < mask.mean() < 0.95


def test_exact_levels_equal_slicing_with_dask_levels():
    a = np.random.default_rng(0).random((800, 600)).astype(np.float32)
    levels = [da.from_array(a, chunks=100), a[::2, ::2].copy(), a[::4, ::4].copy()]
    pyr = open_pyramid(levels)
    img, bbox = pyr.crops((400.2, 299.7), (1, 2, 4), 48)
    for j, f in enumerate((1, 2, 4)):
        sy, sx = _start(400.2, f, 48), _start(299.7, f, 48)
        np.testing.assert_array_equal(img[j, 0], a[::f, ::f][sy:sy + 48, sx:sx + 48])


def test_missing_factor_is_area_averaged():
    a = np.random.default_rng(1).random((512, 512)).astype(np.float32)
    pyr = open_pyramid([a, a.reshape(256, 2, 256, 2).mean(axis=(1, 3))])
    img, bbox = pyr.crops((256, 256), (1, 8, 32), 16)
    for j, f in ((1, 8), (2, 32)):
        ref = downscale_local_mean(a.astype(np.float64), (f, f))
        s = _start(256, f, 16)
        got, want = img[j, 0], np.zeros((16, 16))
        lo, hi = max(s, 0), min(s + 16, ref.shape[0])
        want[lo - s:hi - s, lo - s:hi - s] = ref[lo:hi, lo:hi]
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(bbox[2, 1] - bbox[2, 0], [15 * 32, 15 * 32])


def test_padding_and_validity_mask():
    a = np.full((300, 300), 7, np.uint16)
    pyr = open_pyramid(a)
    img, bbox, valid = pyr.crops((0, 299), (1, 4), 32, return_valid=True)
    # level 1: rows -15..16 (start -15.5 rounds half up) and cols 284..315 -> 17 x 16 valid pixels
    assert valid[0].sum() == 17 * 16 and valid[0][15:, :16].all()
    assert np.all(img[0, 0][valid[0]] == 7) and np.all(img[0, 0][~valid[0]] == 0)
    # level 4 (virtual, 75 px): start rows round(-0.375 - 15.5) = -16 -> 16 invalid rows
    assert valid[1][:16].sum() == 0 and valid[1][16:].any()
    assert np.all(img[1, 0][valid[1]] == 7)


def test_normalizer_policies_and_dtypes():
    rng = np.random.default_rng(2)
    for dtype, hi in ((np.uint8, 255), (np.uint16, 65535)):
        a = rng.integers(0, hi, (2, 400, 400)).astype(dtype)
        pyr = open_pyramid(a)
        norm = Normalizer.from_pyramid(pyr, percentiles=(1, 99))
        coarse = pyr.arrays[-1].compute().reshape(2, -1).astype(np.float64)
        np.testing.assert_allclose(norm.low, np.percentile(coarse, 1, axis=1), rtol=1e-6)
        np.testing.assert_allclose(norm.high, np.percentile(coarse, 99, axis=1), rtol=1e-6)
        img, _, valid = pyr.crops((5, 5), (1, 2), 32, normalizer=norm, return_valid=True)
        raw, _ = pyr.crops((5, 5), (1, 2), 32)
        expect = (raw - np.array(norm.low)[:, None, None]) / (np.array(norm.high) - norm.low)[:, None, None]
        np.testing.assert_allclose(img[valid[:, None].repeat(2, 1)], expect[valid[:, None].repeat(2, 1)],
                                   rtol=1e-5, atol=1e-6)
        assert np.all(img[~valid[:, None].repeat(2, 1)] == 0)  # padding stays zero
        assert Normalizer.from_dict(norm.to_dict()) == norm
    f = rng.random((200, 200)).astype(np.float32)
    fixed = Normalizer.fixed(0.5, 1.5)
    out = fixed(f[None, None])
    np.testing.assert_allclose(out[0, 0], f - 0.5, rtol=1e-6)
    np.testing.assert_array_equal(Normalizer("none")(f[None]), f[None])
    with pytest.raises(ValueError, match="unknown"):
        Normalizer("zscore")
    with pytest.raises(ValueError, match="3 channel values"):
        Normalizer.fixed([0, 0, 0], [1, 1, 1])(np.zeros((2, 4, 4)))


def test_crop_errors():
    a = np.zeros((300, 300), np.float32)
    pyr = open_pyramid(a)
    with pytest.raises(ValueError, match="outside the slide"):
        pyr.crops((5000, 5000), (1, 4), 32)
    with pytest.raises(ValueError, match="not nested"):
        pyr.crops((100, 100), (1, 3, 8), 32)
    with pytest.raises(ValueError, match="ascending"):
        pyr.crops((100, 100), (4, 1), 32)
    with pytest.raises(ValueError, match="patch size 8"):
        pyr.crops((100, 100), (1, 4), 60, patch_size=8)
    with pytest.raises(ValueError, match="finite"):
        pyr.crops((np.nan, 100), (1,), 32)
    a[150, 150] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        open_pyramid(a).crops((150, 150), (1,), 32)


def test_normalizer_on_3d_crops():
    vol = np.random.default_rng(5).random((2, 16, 64, 64)).astype(np.float32)
    pyr = open_pyramid(vol, axes="czyx", min_size=32)
    norm = Normalizer.fixed([0.0, 1.0], [2.0, 3.0])
    img, _, valid = pyr.crops((8, 32, 32), (1,), 16, normalizer=norm, return_valid=True)
    raw, _ = pyr.crops((8, 32, 32), (1,), 16)
    # z starts at round(8 - 7.5) = 1, so the last z plane (16) is padding
    assert valid[0, :15].all() and not valid[0, 15].any()
    np.testing.assert_allclose(img[0, 0, :15], raw[0, 0, :15] / 2, rtol=1e-6)
    np.testing.assert_allclose(img[0, 1, :15], (raw[0, 1, :15] - 1) / 2, rtol=1e-6)
    assert np.all(img[0, :, 15] == 0)


def test_concurrent_crops_match_sequential(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from napari_muvit.data import write_synthetic_slide

    path = write_synthetic_slide(tmp_path / "t.zarr", 1024, seed=2, chunk=256)
    for pyr in (open_pyramid(path), open_pyramid(np.asarray(open_pyramid(path).arrays[0][0]))):
        centers = np.random.default_rng(0).uniform(0, 1024, (24, 2))
        seq = [pyr.crops(c, (1, 4, 16), 64)[0] for c in centers]
        with ThreadPoolExecutor(4) as pool:  # the engine's prefetcher reads from several threads
            par = list(pool.map(lambda c, p=pyr: p.crops(c, (1, 4, 16), 64)[0], centers))
        for a, b in zip(seq, par):
            np.testing.assert_array_equal(a, b)


def test_in_memory_coarse_level_built_in_strips(monkeypatch):
    from napari_muvit.data import pyramid as pyramid_module

    monkeypatch.setattr(pyramid_module, "CACHE_STRIP_BYTES", 3 * 4 * 4 * 203)  # a few rows per strip
    a = np.random.default_rng(6).random((3, 250, 203)).astype(np.float32)
    pyr = open_pyramid(a, min_size=32)
    img, _, valid = pyr.crops((125, 101), (4,), 64, return_valid=True)
    ref = downscale_local_mean(a[:, :248, :200].astype(np.float64), (1, 4, 4))  # trimmed like dask
    s0, s1 = _start(125, 4, 64), _start(101, 4, 64)
    assert (s0, s1) == (-1, -7) and valid.sum() == 62 * 50  # the whole 62 x 50 coarse level is inside
    np.testing.assert_allclose(img[0][:, -s0:-s0 + 62, -s1:-s1 + 50], ref, rtol=1e-5)
    assert len(pyr._cache) == 1  # averaged once, then reused


def test_chunk_cache_crops_equal_uncached_and_respect_byte_bound(tmp_path):
    import zarr

    from napari_muvit.data.chunk_cache import ChunkCache

    rng = np.random.default_rng(5)
    a = rng.integers(0, 255, (2, 700, 650), dtype=np.uint8)  # (c, y, x), ragged edge chunks of 128
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=a.shape, chunks=(2, 128, 128), dtype="uint8")
    arr[...] = a
    cached, plain = open_pyramid(arr, axes="cyx"), open_pyramid(arr, axes="cyx")
    plain.chunk_cache.max_bytes = 0  # disabled: every window is sliced straight from the zarr array
    bound = 6 * 2 * 128 * 128  # six chunks of 32 KiB
    cached.chunk_cache.max_bytes = bound
    centers = [(350.0, 325.0), (10.5, 640.0), (699.0, 3.0), (-20.0, 300.0), (351.0, 330.0), (128.0, 128.0)]
    for c in centers:
        got = cached.crops(c, (1, 2, 4), 64, return_valid=True)
        ref = plain.crops(c, (1, 2, 4), 64, return_valid=True)
        for u, v in zip(got, ref):
            np.testing.assert_array_equal(u, v)
        assert 0 < cached.chunk_cache.nbytes <= bound  # edge chunks are smaller: count varies
        # and both equal plain numpy slicing of the source at level 1
        sy, sx = _start(c[0], 1, 64), _start(c[1], 1, 64)
        ys, xs = slice(max(sy, 0), min(sy + 64, 700)), slice(max(sx, 0), min(sx + 64, 650))
        np.testing.assert_array_equal(
            got[0][0][:, ys.start - sy : ys.stop - sy, xs.start - sx : xs.stop - sx], a[:, ys, xs])
    assert cached.chunk_cache.hits > 0 and len(plain.chunk_cache) == 0
    # the LRU evicts the least recently used entry once the byte budget is full
    cache = ChunkCache(max_bytes=100)
    for k in range(4):
        cache.put(k, np.zeros(40, np.uint8))
    assert cache.nbytes == 80 and len(cache) == 2 and cache.get(0) is None and cache.get(3) is not None
    cache.put("big", np.zeros(101, np.uint8))  # larger than the whole budget: not kept
    assert cache.get("big") is None and cache.nbytes == 80
    import pickle

    copy = pickle.loads(pickle.dumps(cached))  # a pyramid sent to another process: cache budget kept, empty
    assert copy.chunk_cache.max_bytes == bound and copy.chunk_cache.nbytes == 0
    np.testing.assert_array_equal(copy.crops((350.0, 325.0), (1, 2, 4), 64)[0],
                                  plain.crops((350.0, 325.0), (1, 2, 4), 64)[0])
