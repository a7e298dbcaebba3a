"""Tiled TIFF levels (OME-TIFF, SVS) are read tile by tile from the file, not through zarr's event loop."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile
import zarr

from napari_muvit.data import open_pyramid
from napari_muvit.data.tiff_tiles import TiffTiles


@pytest.fixture
def no_zarr_reads(monkeypatch):
    def refuse(self, key):
        raise AssertionError("read through zarr")

    monkeypatch.setattr(zarr.Array, "__getitem__", refuse)


def _ome_tiff(path, a, compression):
    with tifffile.TiffWriter(path) as tw:
        tw.write(a, subifds=1, tile=(64, 64), compression=compression, metadata={"axes": "YX"})
        tw.write(a[::2, ::2], subfiletype=1, tile=(64, 64), compression=compression)


def _svs(path, a, compression):
    head = "Aperio Image Library v10.0.0\n"
    h, w = a.shape[:2]
    with tifffile.TiffWriter(path) as tw:
        tw.write(a, tile=(64, 64), photometric="rgb", compression=compression, metadata=None,
                 description=head + f"{w}x{h} [0,0 {w}x{h}] (64x64) JPEG|AppMag = 20|MPP = 0.5")
        tw.write(a[::8, ::8], photometric="rgb", metadata=None, description=head + "thumbnail")
        tw.write(a[::4, ::4], tile=(64, 64), photometric="rgb", compression=compression, metadata=None,
                 description=head + f"{w}x{h} -> {w // 4}x{h // 4} - |AppMag = 20|MPP = 0.5")


@pytest.mark.parametrize("compression", [None, "zlib", "lzw"])
def test_ome_tiff_tiles_equal_tifffile_at_every_edge(tmp_path, compression, no_zarr_reads):
    a = np.random.default_rng(0).integers(0, 4000, (200, 150), dtype=np.uint16)  # 64 px tiles: partial edges
    _ome_tiff(tmp_path / "s.ome.tif", a, compression)
    pyr = open_pyramid(tmp_path / "s.ome.tif")
    assert all(isinstance(pyr._chunk_reader(i), TiffTiles) for i in range(2))
    for cy, cx in ((0, 0), (100, 75), (199, 149), (5, 140), (190, 4)):
        img, _ = pyr.crops((cy, cx), (1, 2), 32)
        y0, x0 = cy - 15, cx - 15
        want = np.zeros((32, 32), np.float32)
        ys, xs = slice(max(y0, 0), min(y0 + 32, 200)), slice(max(x0, 0), min(x0 + 32, 150))
        want[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = a[ys, xs]
        np.testing.assert_array_equal(img[0, 0], want)


def test_svs_jpeg_tiles_decode_as_tifffile_decodes_them(tmp_path, no_zarr_reads):
    rng = np.random.default_rng(1)
    a = np.repeat(np.repeat(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), 8, 0), 8, 1)  # 320 x 400 RGB
    _svs(tmp_path / "s.svs", a, "jpeg")
    with tifffile.TiffFile(tmp_path / "s.svs") as tif:
        decoded = [lv.asarray() for lv in tif.series[0].levels]  # JPEG is lossy: tifffile's pixels are the truth
    pyr = open_pyramid(tmp_path / "s.svs")
    assert pyr.factors == [(1, 1), (4, 4)] and isinstance(pyr._chunk_reader(0), TiffTiles)
    img, _ = pyr.crops((160, 200), (1,), 64)
    np.testing.assert_array_equal(img[0], np.moveaxis(decoded[0][129:193, 169:233], 2, 0))
    img, _ = pyr.crops((300, 390), (1,), 64)  # the corner tile, cut at the slide's edge, padded after it
    np.testing.assert_array_equal(img[0][:, :51, :41], np.moveaxis(decoded[0][269:, 359:], 2, 0))
    assert not img[0][:, 51:, :].any() and not img[0][:, :, 41:].any()


def test_strip_tiffs_and_planar_pages_are_read_through_zarr(tmp_path):
    a = np.random.default_rng(2).integers(0, 255, (3, 96, 80), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "strips.tif", a[0])  # not tiled
    tifffile.imwrite(tmp_path / "planar.tif", a, tile=(32, 32), planarconfig="separate", photometric="rgb")
    strips = open_pyramid(tmp_path / "strips.tif")
    assert strips._chunk_reader(0) is None
    np.testing.assert_array_equal(strips.crops((48, 40), (1,), 16)[0][0, 0], a[0, 41:57, 33:49])
    planar = open_pyramid(tmp_path / "planar.tif")
    assert planar._chunk_reader(0) is None
    np.testing.assert_array_equal(planar.crops((48, 40), (1,), 16)[0][0], a[:, 41:57, 33:49])


def test_threads_read_one_tiff_beside_zarr_reads_of_the_same_file(tmp_path):
    """Tile reads take the file handle's lock, the one tifffile's zarr store takes: both can read at once."""
    a = np.random.default_rng(3).integers(0, 60000, (512, 512), dtype=np.uint16)
    _ome_tiff(tmp_path / "s.ome.tif", a, "zlib")
    pyr = open_pyramid(tmp_path / "s.ome.tif")
    pyr.chunk_cache.max_bytes = 4 * 64 * 64 * 2  # four tiles: tiles are decoded again and again
    raw = zarr.open(tifffile.TiffFile(tmp_path / "s.ome.tif").series[0].aszarr(level=0), mode="r")
    direct = TiffTiles.for_level(pyr._file.series[0].levels[0], pyr._levels[0].raw)
    centres = [(int(y), int(x)) for y, x in np.random.default_rng(4).integers(16, 496, (150, 2))]

    def crop(c):
        return pyr.crops(c, (1,), 32)[0][0, 0]

    def through_zarr(c):  # the same file handle as the pyramid's, through tifffile's zarr store
        return np.asarray(pyr._levels[0].raw[c[0] - 15 : c[0] + 17, c[1] - 15 : c[1] + 17])

    with ThreadPoolExecutor(4) as pool:
        crops = pool.map(crop, centres)
        windows = pool.map(through_zarr, centres)
        tiles = pool.map(lambda k: direct.read_chunk(divmod(k, 8)), range(64))
        for (cy, cx), img, win in zip(centres, crops, windows):
            want = a[cy - 15 : cy + 17, cx - 15 : cx + 17]
            np.testing.assert_array_equal(img, want)
            np.testing.assert_array_equal(win, want)
        for k, tile in enumerate(tiles):
            i, j = divmod(k, 8)
            np.testing.assert_array_equal(tile, a[64 * i : 64 * i + 64, 64 * j : 64 * j + 64])
    assert raw.shape == (512, 512)
