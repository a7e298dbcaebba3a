"""Readers against files written by each format's own writer; lazy reads counted at the store."""

import numpy as np
import pytest
import tifffile
import zarr
from zarr.storage import LocalStore, WrapperStore

from napari_muvit.data import open_pyramid

CXY = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def _ome_zarr_py(path, data, version):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    fmt = FormatV04() if version == "0.4" else FormatV05()
    store = parse_url(str(path), mode="w", fmt=fmt).store
    root = zarr.group(store=store, zarr_format=2 if version == "0.4" else 3)
    write_image(data, root, axes=CXY, fmt=fmt, scale_factors=(2, 4), scale={"y": 0.25, "x": 0.25},
                axes_units={"y": "micrometer", "x": "micrometer"})


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_written_by_ome_zarr_py(tmp_path, version):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4000, (2, 300, 400), dtype=np.uint16)
    path = tmp_path / f"img{version}.zarr"
    _ome_zarr_py(path, data, version)
    # the on-disk zarr format is the one the OME version prescribes
    meta = "zarr.json" if version == "0.5" else ".zattrs"
    assert (path / meta).exists()
    pyr = open_pyramid(path)
    assert pyr.factors == [(1, 1), (2, 2), (4, 4)]
    assert pyr.pixel_size == (0.25, 0.25) and pyr.unit == "micrometer"
    assert pyr.n_channels == 2 and pyr.shape == (300, 400) and pyr.dtype == np.uint16
    img, bbox = pyr.crops((150, 200), (1, 2, 4), 32)
    assert img.shape == (3, 2, 32, 32) and img.dtype == np.float32
    np.testing.assert_array_equal(img[0], data[:, 135:167, 185:217])
    # exact levels come straight from the stored arrays the writer made
    lvl2 = np.asarray(zarr.open_group(str(path), mode="r")["s1"])
    s = np.floor((np.array([150, 200]) - 0.5) / 2 - 15.5 + 0.5).astype(int)
    np.testing.assert_array_equal(img[1], lvl2[:, s[0]:s[0] + 32, s[1]:s[1] + 32])
    np.testing.assert_allclose(bbox[1], [[2 * s[0] + 0.5, 2 * s[1] + 0.5], [2 * s[0] + 62.5, 2 * s[1] + 62.5]])


def _write_v05(path, levels, scales, axes):
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    for k, arr in enumerate(levels):
        root.create_array(str(k), data=arr, chunks=(16,) * arr.ndim)
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": axes,
        "datasets": [{"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": s}]}
                     for k, s in enumerate(scales)],
    }]}
    return path


def test_factors_come_from_metadata(tmp_path):
    a = np.arange(90 * 90, dtype=np.float32).reshape(90, 90)
    yx = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    # factor 3 (not a power of two) and a 0.7 um pixel: only the metadata can say so
    _write_v05(tmp_path / "a.zarr", [a, a[::3, ::3]], [[0.7, 0.7], [2.1, 2.1]], yx)
    pyr = open_pyramid(tmp_path / "a.zarr")
    assert pyr.factors == [(1, 1), (3, 3)]
    np.testing.assert_allclose(pyr.pixel_size, (0.7, 0.7))
    _write_v05(tmp_path / "b.zarr", [a, a[::2, ::2]], [[1, 1], [1.5, 1.5]], yx)
    with pytest.raises(ValueError, match="not a whole-number multiple"):
        open_pyramid(tmp_path / "b.zarr")
    _write_v05(tmp_path / "c.zarr", [a, a[::2, ::2]], [[1, 1], [2, 4]], yx)
    with pytest.raises(ValueError, match="aspect ratio"):
        open_pyramid(tmp_path / "c.zarr")


def test_ome_zarr_3d_yx_only_downsampling(tmp_path):
    rng = np.random.default_rng(2)
    vol = rng.random((12, 64, 64)).astype(np.float32)
    half = vol.reshape(12, 32, 2, 32, 2).mean(axis=(2, 4))
    zyx = [{"name": n, "type": "space"} for n in "zyx"]
    _write_v05(tmp_path / "v.zarr", [vol, half], [[1, 1, 1], [1, 2, 2]], zyx)
    pyr = open_pyramid(tmp_path / "v.zarr")
    assert pyr.spatial_ndim == 3 and pyr.factors == [(1, 1, 1), (1, 2, 2)]
    img, bbox, valid = pyr.crops((6, 32, 32), (1, 2), 8, return_valid=True)
    assert img.shape == (2, 1, 8, 8, 8) and bbox.shape == (2, 2, 3)
    # level 1: start = 6 - 3.5 -> 3 (half up), 32 - 3.5 -> 29; level 2 in y/x: (32 - 0.5)/2 - 3.5 -> 12
    np.testing.assert_array_equal(img[0, 0], vol[3:11, 29:37, 29:37])
    np.testing.assert_allclose(img[1, 0], half[3:11, 12:20, 12:20])
    np.testing.assert_allclose(bbox[1, 1] - bbox[1, 0], [7, 14, 14])  # z keeps factor 1
    assert valid.all()


def test_3d_array_with_zyx_downsampling():
    vol = np.random.default_rng(3).random((64, 64, 64)).astype(np.float32)
    pyr = open_pyramid(vol, axes="zyx", min_size=16, downsample_z=True)
    assert pyr.factors[1] == (2, 2, 2)
    img, bbox = pyr.crops((32, 32, 32), (1, 4), 8)
    ref = vol.reshape(16, 4, 16, 4, 16, 4).mean(axis=(1, 3, 5))
    s = int(np.floor((32 - 1.5) / 4 - 3.5 + 0.5))
    np.testing.assert_allclose(img[1, 0], ref[s:s + 8, s:s + 8, s:s + 8], rtol=1e-5)


def test_pyramidal_ome_tiff(tmp_path):
    rng = np.random.default_rng(4)
    a = rng.integers(0, 255, (600, 700), dtype=np.uint8)
    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(a, subifds=2, tile=(128, 128),
                 metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
        tw.write(a[::2, ::2], subfiletype=1, tile=(128, 128))
        tw.write(a[::4, ::4], subfiletype=1, tile=(128, 128))
    pyr = open_pyramid(path)
    assert pyr.factors == [(1, 1), (2, 2), (4, 4)]
    assert pyr.pixel_size == (0.5, 0.5) and pyr.unit == "micrometer"
    img, _ = pyr.crops((300, 350), (1, 2, 4), 64)
    for j, f in enumerate((1, 2, 4)):
        s = np.floor((np.array([300, 350]) - (f - 1) / 2) / f - 31.5 + 0.5).astype(int)
        np.testing.assert_array_equal(img[j, 0], a[::f, ::f][s[0]:s[0] + 64, s[1]:s[1] + 64])


def test_svs_like_tiff_through_tiffslide(tmp_path):
    rng = np.random.default_rng(5)
    a = rng.integers(0, 255, (512, 640, 3), dtype=np.uint8)
    path = tmp_path / "slide.svs"
    head = "Aperio Image Library v10.0.0\n"
    with tifffile.TiffWriter(path) as tw:
        tw.write(a, tile=(128, 128), photometric="rgb", metadata=None,
                 description=head + "640x512 [0,0 640x512] (128x128) RAW|AppMag = 20|MPP = 0.25")
        tw.write(a[::8, ::8], photometric="rgb", metadata=None, description=head + "thumbnail")
        tw.write(a[::4, ::4], tile=(128, 128), photometric="rgb", metadata=None,
                 description=head + "640x512 -> 160x128 - |AppMag = 20|MPP = 0.25")
    pyr = open_pyramid(path)
    assert pyr.rgb and pyr.n_channels == 3 and pyr.factors == [(1, 1), (4, 4)]
    assert pyr.pixel_size == (0.25, 0.25)
    img, _ = pyr.crops((256, 320), (1, 4), 32)
    np.testing.assert_array_equal(img[0], np.moveaxis(a[241:273, 305:337], 2, 0))
    s = np.floor((np.array([256, 320]) - 1.5) / 4 - 15.5 + 0.5).astype(int)
    np.testing.assert_array_equal(img[1], np.moveaxis(a[::4, ::4][s[0]:s[0] + 32, s[1]:s[1] + 32], 2, 0))


def test_bioio_single_level_reader(tmp_path):
    from napari_muvit.data.slide_readers import open_with_bioio

    a = np.random.default_rng(6).integers(0, 60000, (2, 300, 300), dtype=np.uint16)
    path = tmp_path / "plain.ome.tif"
    tifffile.imwrite(path, a, metadata={"axes": "CYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3})
    pyr = open_with_bioio(path, name="plain")
    assert pyr.n_channels == 2 and pyr.factors[:2] == [(1, 1), (2, 2)]
    np.testing.assert_allclose(pyr.pixel_size, (0.3, 0.3))
    img, _ = pyr.crops((150, 150), (1,), 16)
    np.testing.assert_array_equal(img[0], a[:, 143:159, 143:159])


def test_array_inputs_channels_first():
    rgb = np.random.default_rng(7).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    pyr = open_pyramid(rgb)
    assert pyr.rgb and pyr.n_channels == 3 and pyr.arrays[0].shape == (3, 300, 400)
    assert pyr.level_factors == [1.0, 2.0]  # 150 < 256 stops the lazy coarsening
    multi = np.random.default_rng(8).random((4, 512, 512)).astype(np.float32)
    pyr = open_pyramid(multi, min_size=64)
    assert not pyr.rgb and pyr.n_channels == 4 and pyr.level_factors == [1, 2, 4, 8, 16]
    ref = multi.reshape(4, 32, 16, 32, 16).mean(axis=(2, 4))
    np.testing.assert_allclose(pyr.arrays[4].compute(), ref, rtol=1e-5)


class CountingStore(WrapperStore):
    """Counts chunk reads (keys with a chunk index) per array path."""

    def __init__(self, store):
        super().__init__(store)
        self.reads = []

    def _with_store(self, store):
        return type(self)(store)

    async def get(self, key, prototype, byte_range=None):
        if "/c/" in key or key.split("/")[-1][0].isdigit():
            self.reads.append(key)
        return await self._store.get(key, prototype, byte_range)


def test_crops_read_only_needed_chunks(tmp_path):
    a = np.random.default_rng(9).integers(0, 255, (1024, 1024), dtype=np.uint8)
    yx = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    root = zarr.open_group(str(tmp_path / "c.zarr"), mode="w", zarr_format=3)
    root.create_array("0", data=a, chunks=(64, 64))
    root.create_array("1", data=a[::2, ::2], chunks=(64, 64))
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": yx, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]},
        {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [2, 2]}]}]}]}
    store = CountingStore(LocalStore(str(tmp_path / "c.zarr"), read_only=True))
    pyr = open_pyramid(zarr.open_group(store=store, mode="r"))
    store.reads.clear()
    img, _ = pyr.crops((500, 500), (1, 2), 64)
    # a 64 px window touches at most 2x2 chunks of 64 px per level (256 chunks per level exist)
    lvl0 = [k for k in store.reads if k.startswith("0/")]
    lvl1 = [k for k in store.reads if k.startswith("1/")]
    assert 1 <= len(lvl0) <= 4 and 1 <= len(lvl1) <= 4
    store.reads.clear()
    # factor 8 is not stored: averaged from level 2x, a 256 px window there = at most 5x5 chunks
    img, _ = pyr.crops((500, 500), (8,), 64)
    assert 0 < len(store.reads) <= 25 and all(k.startswith("1/") for k in store.reads)
    ref = a[::2, ::2].reshape(128, 4, 128, 4).mean(axis=(1, 3))
    s = int(np.floor((500 - 3.5) / 8 - 31.5 + 0.5))
    np.testing.assert_allclose(img[0, 0], ref[s:s + 64, s:s + 64], rtol=1e-6)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_pyramid(tmp_path / "missing.zarr")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="could not be read as an image"):
        open_pyramid(tmp_path / "notes.txt")
    (tmp_path / "fake.tif").write_bytes(b"hello")
    with pytest.raises(ValueError, match="could not be read as an image"):
        open_pyramid(tmp_path / "fake.tif")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="not an OME-Zarr"):
        open_pyramid(tmp_path / "folder")
    with pytest.raises(ValueError, match="no levels"):
        open_pyramid([])
    a = np.zeros((100, 100), np.uint8)
    with pytest.raises(ValueError, match="aspect ratio"):
        open_pyramid([a, a[::2, ::4]])
    with pytest.raises(ValueError, match="fine to coarse"):
        open_pyramid([a, a[::4, ::4], a[::2, ::2]])
    with pytest.raises(ValueError, match="not supported"):
        open_pyramid(np.zeros((2, 2, 2, 2, 2)))


@pytest.mark.parametrize("axes,shape", [("YXS", (256, 320, 3)), ("CYX", (2, 256, 320)), ("ZYX", (5, 256, 320))])
def test_pyramidal_ome_tiff_axes(tmp_path, axes, shape):
    a = np.random.default_rng(10).integers(0, 255, shape, dtype=np.uint8)
    sub = (slice(None, None, 2), slice(None, None, 2), slice(None)) if axes == "YXS" else \
        (slice(None), slice(None, None, 2), slice(None, None, 2))
    path = tmp_path / "p.ome.tif"
    kw = {"photometric": "rgb"} if axes == "YXS" else {"photometric": "minisblack"}
    with tifffile.TiffWriter(path) as tw:
        tw.write(a, subifds=1, tile=(64, 64), metadata={"axes": axes}, **kw)
        tw.write(a[sub], subfiletype=1, tile=(64, 64), **kw)
    pyr = open_pyramid(path)
    chw = np.moveaxis(a, 2, 0) if axes == "YXS" else (a if axes == "CYX" else a[None])
    assert pyr.arrays[0].shape == chw.shape and pyr.rgb == (axes == "YXS")
    if axes == "ZYX":
        assert pyr.factors == [(1, 1, 1), (1, 2, 2)]
        img, _ = pyr.crops((2, 128, 160), (1, 2), 4)
        np.testing.assert_array_equal(img[1, 0], a[:, ::2, ::2][1:5, 62:66, 78:82])
    else:
        assert pyr.factors == [(1, 1), (2, 2)]
        img, _ = pyr.crops((128, 160), (1, 2), 32)
        np.testing.assert_array_equal(img[1], chw[:, ::2, ::2][:, 48:80, 64:96])


def test_bioformats2raw_layout(tmp_path):
    a = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    yx = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    root = zarr.open_group(str(tmp_path / "b2r.zarr"), mode="w", zarr_format=3)
    root.attrs["ome"] = {"version": "0.5", "bioformats2raw.layout": 3}
    _write_v05(tmp_path / "b2r.zarr" / "0", [a, a[::2, ::2]], [[1, 1], [2, 2]], yx)
    pyr = open_pyramid(tmp_path / "b2r.zarr")
    assert pyr.factors == [(1, 1), (2, 2)]
    np.testing.assert_array_equal(pyr.arrays[0][0].compute(), a)
