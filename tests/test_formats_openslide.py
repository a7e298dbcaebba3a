"""OpenSlide adapter against slides tifffile writes in the layouts OpenSlide's vendor drivers read.

Generic tiled TIFF, Philips TIFF (XML description, tile-padded levels, sparse tiles) and Hamamatsu NDPI
(one JPEG strip per level, NDPI private tags) are written with tifffile; OpenSlide must recognise each
as that vendor, and the pyramid must give back the written pixels, factors and pixel size, with crops
aligned to the world frame. MIRAX, Leica SCN, Ventana BIF and VMS/VMU have no writer on the package index.
"""

import pickle

import numpy as np
import pytest
import tifffile

openslide = pytest.importorskip("openslide")

from napari_muvit.data import open_pyramid  # noqa: E402
from napari_muvit.data.openslide_reader import OpenSlideLevel, open_openslide  # noqa: E402


def _window(level: np.ndarray, start, size: int, fill: float = 0.0) -> np.ndarray:
    """``level (Y, X, 3)`` window at ``start`` as ``(3, size, size)``, ``fill`` outside the level."""
    out = np.full((size, size, 3), fill, np.float32)
    y0, x0 = max(start[0], 0), max(start[1], 0)
    y1, x1 = min(start[0] + size, level.shape[0]), min(start[1] + size, level.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - start[0]:y1 - start[0], x0 - start[1]:x1 - start[1]] = level[y0:y1, x0:x1]
    return np.moveaxis(out, 2, 0)


def _start(center, f: int, size: int) -> np.ndarray:
    """Top-left pixel index of a crop of ``size`` centred on world ``center`` at factor ``f``."""
    return np.floor((np.asarray(center) - (f - 1) / 2) / f - (size - 1) / 2 + 0.5).astype(int)


def _check_crops(pyr, levels_by_factor: dict, center, size=64):
    img, bbox = pyr.crops(center, tuple(levels_by_factor), size)
    for j, (f, lv) in enumerate(levels_by_factor.items()):
        s = _start(center, f, size)
        np.testing.assert_array_equal(img[j], _window(lv, s, size))
        # bbox: world centres of the first and last pixel of the crop
        np.testing.assert_allclose(bbox[j, 0], s * f + (f - 1) / 2)
        np.testing.assert_allclose(bbox[j, 1], (s + size - 1) * f + (f - 1) / 2)


def test_generic_tiled_tiff(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (700, 900, 3), dtype=np.uint8)
    path = tmp_path / "generic.tif"
    with tifffile.TiffWriter(path) as tw:
        for f in (1, 2, 4):
            tw.write(a[::f, ::f], tile=(128, 128), photometric="rgb", compression="zlib", metadata=None,
                     resolution=(1e4 / (0.5 * f), 1e4 / (0.5 * f)), resolutionunit="CENTIMETER",
                     subfiletype=0 if f == 1 else 1)
    assert openslide.OpenSlide.detect_format(str(path)) == "generic-tiff"
    pyr = open_openslide(path, name="generic")
    assert pyr.rgb and pyr.n_channels == 3 and pyr.dtype == np.uint8
    assert pyr.shape == (700, 900) and pyr.factors == [(1, 1), (2, 2), (4, 4)]
    assert pyr.pixel_size == (0.5, 0.5) and pyr.unit == "micrometer"
    assert [pyr.level_shape(k) for k in range(3)] == [(700, 900), (350, 450), (175, 225)]
    levels = {f: a[::f, ::f] for f in (1, 2, 4)}
    _check_crops(pyr, levels, (350, 450))
    _check_crops(pyr, levels, (10, 890))  # zero padding past the top-right corner
    # the dask levels hold the same pixels, channels first
    np.testing.assert_array_equal(np.asarray(pyr.arrays[2][:, 40:60, 100:130]),
                                  np.moveaxis(a[::4, ::4][40:60, 100:130], 2, 0))
    # reads go in tile-multiple blocks through the chunk cache
    assert pyr._levels[0].raw.chunks == (512, 512, 3)
    assert pyr.chunk_cache.misses > 0


def _philips_xml(factors, mpp_mm: float) -> str:
    def spacing(f):
        v = f"&quot;{mpp_mm * f:.6f}&quot; &quot;{mpp_mm * f:.6f}&quot;"
        return f'<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">{v}</Attribute>'

    reps = "".join(f'<DataObject ObjectType="PixelDataRepresentation">{spacing(f)}</DataObject>' for f in factors)
    return (
        '<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
        '<Attribute Name="PIM_DP_SCANNED_IMAGES" Group="0x301D" Element="0x1003" PMSVR="IDataObjectArray"><Array>'
        '<DataObject ObjectType="DPScannedImage">' + spacing(1)
        + '<Attribute Name="PIM_DP_IMAGE_TYPE" Group="0x301D" Element="0x1004" PMSVR="IString">WSI</Attribute>'
        '<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE" Group="0x1001" Element="0x8b01" '
        f'PMSVR="IDataObjectArray"><Array>{reps}</Array></Attribute>'
        '</DataObject></Array></Attribute></DataObject>'
    )


def _tiles(img: np.ndarray, tile: int, missing=()):
    """Tiles of ``img`` padded to whole tiles, row by row; None (an empty tile) at ``missing`` indices."""
    ny, nx = -(-img.shape[0] // tile), -(-img.shape[1] // tile)
    pad = np.zeros((ny * tile, nx * tile, 3), np.uint8)
    pad[:img.shape[0], :img.shape[1]] = img
    for i in range(ny):
        for j in range(nx):
            yield None if (i, j) in missing else pad[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile]


def test_philips_tiff(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 255, (600, 900, 3), dtype=np.uint8)
    tile, factors = 256, (1, 2, 4)
    path = tmp_path / "philips.tiff"
    with tifffile.TiffWriter(path) as tw:
        for k, f in enumerate(factors):
            lv = a[::f, ::f]
            # Philips stores every level padded to whole tiles; the XML pixel spacing gives the true downsample.
            # Tile (1, 3) of level 0 is not stored (a sparse, multi-ROI scan).
            shape = (-(-lv.shape[0] // tile) * tile, -(-lv.shape[1] // tile) * tile, 3)
            tw.write(_tiles(lv, tile, missing={(1, 3)} if f == 1 else ()), shape=shape, dtype=np.uint8,
                     tile=(tile, tile), photometric="rgb", compression="zlib", metadata=None,
                     software="Philips DP v1.0" if k == 0 else None,
                     description=_philips_xml(factors, 0.00025) if k == 0 else None,
                     subfiletype=0 if k == 0 else 1)
    assert openslide.OpenSlide.detect_format(str(path)) == "philips"
    pyr = open_pyramid(path)  # a .tiff OpenSlide recognises as a vendor format goes through OpenSlide
    assert pyr.metadata["format"] == "Philips TIFF"
    assert pyr.rgb and pyr.pixel_size == (0.25, 0.25)
    assert pyr.factors == [(1, 1), (2, 2), (4, 4)]
    # level 0 keeps its tile padding (as OpenSlide reports it); coarser levels are clipped to level 0 / f
    assert pyr.shape == (768, 1024)
    assert [pyr.level_shape(k) for k in (1, 2)] == [(384, 512), (192, 256)]
    expected = np.zeros((768, 1024, 3), np.uint8)
    expected[:600, :900] = a
    expected[256:512, 768:1024] = 255  # the missing tile is transparent: composited onto white
    levels = {1: expected, 2: a[::2, ::2], 4: a[::4, ::4]}
    _check_crops(pyr, {1: expected}, (300, 800))  # across the missing tile
    _check_crops(pyr, {f: levels[f] for f in (2, 4)}, (300, 450))


def _ndpi(path, a, factors, mpp, flag=True):
    with tifffile.TiffWriter(path) as tw:
        for f in factors:
            lv = a[::f, ::f]
            tags = [(65420, 4, 1, 1, True), (65421, 11, 1, 20.0 / f, True), (65424, 9, 1, 0, True)] if flag else []
            tw.write(lv, photometric="rgb", compression="jpeg", compressionargs={"level": 95},
                     rowsperstrip=lv.shape[0], metadata=None, resolution=(1e4 / (mpp * f), 1e4 / (mpp * f)),
                     resolutionunit="CENTIMETER", extratags=tags)


def test_ndpi(tmp_path):
    yy, xx = np.mgrid[0:512, 0:768]
    a = np.stack([yy % 256, xx % 256, (yy + xx) // 4 % 256], -1).astype(np.uint8)
    path = tmp_path / "slide.ndpi"
    _ndpi(path, a, (1, 2, 4), 0.23)
    assert openslide.OpenSlide.detect_format(str(path)) == "hamamatsu"
    # the same JPEG strips without the NDPI tags, read back by tifffile: what the file holds
    _ndpi(tmp_path / "plain.tif", a, (1, 2, 4), 0.23, flag=False)
    with tifffile.TiffFile(tmp_path / "plain.tif") as tif:
        held = {f: p.asarray() for f, p in zip((1, 2, 4), tif.pages)}
    pyr = open_pyramid(path)
    assert pyr.metadata["format"] == "Hamamatsu" and pyr.rgb
    assert pyr.pixel_size == pytest.approx((0.23, 0.23))
    # OpenSlide adds JPEG-scaled levels below the stored ones (8, 16, 32 here)
    assert pyr.factors[:3] == [(1, 1), (2, 2), (4, 4)] and pyr.factors[3] == (8, 8)
    assert pyr.shape == (512, 768)
    _check_crops(pyr, held, (256, 384))


def test_level_view_pickles_and_reads_windows(tmp_path):
    a = np.random.default_rng(2).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, a, tile=(64, 64), photometric="rgb", metadata=None)
    pyr = open_openslide(path)
    # one stored level gets lazy averaged levels like any single array
    assert pyr.factors == [(1, 1), (2, 2)]
    np.testing.assert_allclose(np.asarray(pyr.arrays[1][:, :5, :5]),
                               np.moveaxis(a[:10, :10].reshape(5, 2, 5, 2, 3).mean((1, 3)), 2, 0), rtol=1e-6)
    view = pickle.loads(pickle.dumps(pyr._levels[0].raw))  # a dask worker in another process reopens by path
    assert isinstance(view, OpenSlideLevel) and view.shape == (300, 500, 3) and view.chunks == (512, 512, 3)
    np.testing.assert_array_equal(view[17:40, 450:500], a[17:40, 450:500])
    np.testing.assert_array_equal(view[5:9, 7:11, 1], a[5:9, 7:11, 1])


def test_missing_openslide_names_the_extra(tmp_path, monkeypatch):
    import sys

    (tmp_path / "slide.mrxs").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "openslide", None)  # import openslide -> ImportError
    with pytest.raises(ValueError, match=r'needs OpenSlide; install it with pip install "napari-muvit\[openslide\]"'):
        open_pyramid(tmp_path / "slide.mrxs")
    with pytest.raises(ValueError, match=r"napari-muvit\[openslide\]"):
        open_openslide(tmp_path / "slide.mrxs")


def test_unreadable_slide_is_one_sentence(tmp_path):
    (tmp_path / "broken.mrxs").write_bytes(b"not a slide")
    with pytest.raises(ValueError, match="could not be read by OpenSlide"):
        open_pyramid(tmp_path / "broken.mrxs")


def test_unscanned_tiles_are_glass_for_the_foreground_mask(tmp_path):
    from napari_muvit.data import foreground_mask

    # dark tissue on the left, bright glass on the right, one tile of tissue never scanned (sparse Philips)
    img = np.full((512, 512, 3), 235, np.uint8)
    img[:, :256] = (90, 40, 120)
    tile = 128
    path = tmp_path / "sparse.tiff"
    with tifffile.TiffWriter(path) as tw:
        for k, f in enumerate((1, 4)):
            lv = img[::f, ::f]
            tw.write(_tiles(lv, tile, missing={(1, 1)} if f == 1 else ()), shape=lv.shape, dtype=np.uint8,
                     tile=(tile, tile), photometric="rgb", compression="zlib", metadata=None,
                     software="Philips DP v1.0" if k == 0 else None,
                     description=_philips_xml((1, 4), 0.0005) if k == 0 else None, subfiletype=0 if k == 0 else 1)
    pyr = open_pyramid(path)
    assert pyr.rgb and pyr.factors == [(1, 1), (4, 4)]
    mask, level = foreground_mask(pyr, level=2)  # averaged from level 0, where the tile is missing
    assert level == 2 and mask.shape == (256, 256)
    expected = np.zeros((256, 256), bool)
    expected[:, :128] = True  # tissue
    expected[64:128, 64:128] = False  # the unscanned tile (level-0 rows/cols 128..255) reads as white glass
    np.testing.assert_array_equal(mask, expected)
    coarse, _ = foreground_mask(pyr, level=4)  # the stored level 4 was scanned whole
    assert coarse[:, :64].all() and not coarse[:, 64:].any()


def test_opening_reads_no_pixels_and_a_crop_reads_its_blocks_only(tmp_path, monkeypatch):
    a = np.random.default_rng(3).integers(0, 255, (2048, 2048, 3), dtype=np.uint8)
    path = tmp_path / "big.tif"
    with tifffile.TiffWriter(path) as tw:
        for f in (1, 4):
            tw.write(a[::f, ::f], tile=(256, 256), photometric="rgb", metadata=None, subfiletype=0 if f == 1 else 1)
    calls: list[tuple] = []
    real = openslide.OpenSlide.read_region
    monkeypatch.setattr(openslide.OpenSlide, "read_region",
                        lambda self, loc, level, size: calls.append((loc, level, size)) or real(self, loc, level, size))
    pyr = open_openslide(path)
    assert calls == []  # opening reads headers only
    img, _ = pyr.crops((700, 700), (1,), 64)  # inside one 512-px block of level 0
    np.testing.assert_array_equal(img[0], np.moveaxis(a[669:733, 669:733], 2, 0))  # centre 700 -> 669..732
    assert calls == [((512, 512), 0, (512, 512))]
    pyr.crops((720, 720), (1,), 64)  # same block: served from the chunk cache
    assert len(calls) == 1


def test_slide_list_names_the_vendor_of_a_tiff(tmp_path):
    from napari_muvit.engine.slide_list import list_slides

    a = np.random.default_rng(5).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "scan.tiff") as tw:
        tw.write(_tiles(a, 128), shape=a.shape, dtype=np.uint8, tile=(128, 128), photometric="rgb", metadata=None,
                 software="Philips DP v1.0", description=_philips_xml((1,), 0.00025))
    tifffile.imwrite(tmp_path / "plain.tif", a, tile=(128, 128), photometric="rgb", metadata=None)
    _ndpi(tmp_path / "x.ndpi", a, (1, 2), 0.23)
    assert {s.name: s.format for s in list_slides(tmp_path)} == {
        "plain.tif": "TIFF", "scan.tiff": "Philips TIFF", "x.ndpi": "Hamamatsu NDPI"}
