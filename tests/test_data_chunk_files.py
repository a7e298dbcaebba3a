"""Slide chunks in the simple zarr v3 layout are read from their files, not through zarr's event loop."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from napari_muvit.data import open_pyramid
from napari_muvit.data.chunk_files import ChunkFiles

YX = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def _slide(path, compressors, shards=None, shape=(70, 50)):
    """Two-level OME-Zarr 0.5 of uint16 values unique per pixel; 16 px chunks, so edge chunks are partial."""
    a = np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape) * 7
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    for k, arr in enumerate((a, a[::2, ::2])):
        root.create_array(f"s{k}", data=np.ascontiguousarray(arr), chunks=(16, 16), shards=shards,
                          compressors=compressors, fill_value=0)
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": YX, "datasets": [
        {"path": f"s{k}", "coordinateTransformations": [{"type": "scale", "scale": [2**k, 2**k]}]}
        for k in range(2)]}]}
    return a


@pytest.fixture
def no_zarr_reads(monkeypatch):
    def refuse(self, key):
        raise AssertionError("read through zarr")

    monkeypatch.setattr(zarr.Array, "__getitem__", refuse)


@pytest.mark.parametrize("codec", ["zstd", "blosc", "none"])
def test_direct_reads_equal_zarr_reads_at_every_edge(tmp_path, codec, no_zarr_reads):
    compressors = {"zstd": [ZstdCodec(level=3)], "blosc": [BloscCodec(cname="lz4", clevel=5)], "none": None}[codec]
    a = _slide(tmp_path / "s.zarr", compressors)
    pyr = open_pyramid(tmp_path / "s.zarr")
    assert all(pyr._chunk_reader(i) is not None for i in range(2))
    for cy, cx in ((0, 0), (35, 25), (69, 49), (8, 44), (64, 3)):  # corners and edges: partial chunks, padding
        img, _ = pyr.crops((cy, cx), (1, 2), 16)
        y0, x0 = cy - 7, cx - 7  # level 1: start = floor(c - 7)
        want = np.zeros((16, 16), np.float32)
        ys, xs = slice(max(y0, 0), min(y0 + 16, 70)), slice(max(x0, 0), min(x0 + 16, 50))
        want[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = a[ys, xs]
        np.testing.assert_array_equal(img[0, 0], want)


def test_chunk_files_read_chunk_cuts_edges_and_reports_absent_files(tmp_path):
    a = _slide(tmp_path / "s.zarr", [ZstdCodec(level=1)])
    arr = zarr.open_array(str(tmp_path / "s.zarr" / "s0"), mode="r")
    files = ChunkFiles.for_array(arr, reading=True)
    np.testing.assert_array_equal(files.read_chunk((4, 3)), a[64:70, 48:50])  # the corner chunk: 6 x 2 px
    np.testing.assert_array_equal(files.read_chunk((1, 2)), a[16:32, 32:48])
    (tmp_path / "s.zarr" / "s0" / "c" / "1" / "2").unlink()
    assert files.read_chunk((1, 2)) is None


def test_writers_still_refuse_blosc_and_sharded_arrays_read_through_zarr(tmp_path):
    _slide(tmp_path / "b.zarr", [BloscCodec()])
    arr = zarr.open_array(str(tmp_path / "b.zarr" / "s0"), mode="r")
    assert ChunkFiles.for_array(arr) is None and ChunkFiles.for_array(arr, reading=True) is not None
    a = _slide(tmp_path / "sh.zarr", [ZstdCodec()], shards=(32, 32))
    pyr = open_pyramid(tmp_path / "sh.zarr")
    assert pyr._chunk_reader(0) is None  # one file holds several chunks: zarr reads it
    np.testing.assert_array_equal(pyr.crops((40, 30), (1,), 16)[0][0, 0], a[33:49, 23:39])


def test_threads_reading_one_pyramid_get_the_same_windows(tmp_path, no_zarr_reads):
    a = _slide(tmp_path / "s.zarr", [ZstdCodec()], shape=(256, 256))
    pyr = open_pyramid(tmp_path / "s.zarr")
    pyr.chunk_cache.max_bytes = 4 * 16 * 16 * 2  # four chunks: threads evict and decode again all the time
    centres = [(int(y), int(x)) for y, x in np.random.default_rng(0).integers(8, 248, (200, 2))]
    with ThreadPoolExecutor(4) as pool:
        crops = list(pool.map(lambda c: pyr.crops(c, (1,), 16)[0][0, 0], centres))
    for (cy, cx), img in zip(centres, crops):
        np.testing.assert_array_equal(img, a[cy - 7 : cy + 9, cx - 7 : cx + 9])
