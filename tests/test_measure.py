"""Measurements from stored labels: areas, % of tissue and object counts, checked against direct counts."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage

from napari_muvit.data.regions import Region
from napari_muvit.engine.measure import (
    NOT_PREDICTED,
    TISSUE,
    LabelSource,
    measure_labels,
    measure_store,
    safe_cell,
    write_csv,
)

NAMES = ["background", "tumour", "stroma"]


def _direct_objects(lab, value, connectivity, min_pixels, mask=None):
    sel = lab == value
    if mask is not None:
        sel &= mask
    structure = np.ones((3, 3)) if connectivity == 8 else None
    comp, _ = ndimage.label(sel, structure=structure)
    sizes = np.bincount(comp.ravel())[1:]
    return int((sizes >= max(1, min_pixels)).sum())


def _random_labels(seed, shape=(83, 121)):
    rng = np.random.default_rng(seed)
    smooth = ndimage.uniform_filter(rng.random(shape), 3)
    lab = np.digitize(smooth, [0.46, 0.54]).astype(np.uint8) + 1  # 1..3
    lab[rng.random(shape) < 0.04] = 0  # a few unpredicted pixels
    return lab


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("block", [7, 16, 1024])
def test_object_counts_equal_labelling_the_whole_array(connectivity, block):
    for seed in range(3):
        lab = _random_labels(seed)
        for min_size in (0, 2, 5, 40):
            table = measure_labels(LabelSource(lab, NAMES), min_size=min_size, connectivity=connectivity,
                                   block=block)
            for k, name in enumerate(NAMES):
                expected = _direct_objects(lab, k + 1, connectivity, min_size)
                assert table.row("slide", name)["objects"] == expected, (seed, min_size, name)
                assert table.row("slide", name)["pixels"] == int((lab == k + 1).sum())


def test_known_slide_areas_percentages_and_objects_across_block_borders():
    lab = np.ones((40, 40), np.uint8)  # background everywhere
    lab[:, 36:] = 0  # a strip that was not predicted
    # a U of tumour: its two arms lie in different blocks and only join two block rows further down
    lab[2:30, 3:5] = 2
    lab[2:30, 12:14] = 2
    lab[28:30, 3:14] = 2
    # two stroma squares touching only at a corner that is also a block corner (blocks of 8)
    lab[4:8, 20:24] = 3
    lab[8:12, 24:28] = 3
    # a lone stroma pixel (removed by a size filter) and a 3x3 tumour square
    lab[35, 30] = 3
    lab[33:36, 17:20] = 2
    tumour_px = 28 * 2 * 2 + 2 * 7 + 9  # arms, bottom bar between them, square
    stroma_px = 16 + 16 + 1
    source = LabelSource(lab, NAMES, pixel_size=(0.5, 0.5), unit="micrometer")

    t8 = measure_labels(source, block=8)
    tumour, stroma, bg = t8.row("slide", "tumour"), t8.row("slide", "stroma"), t8.row("slide", "background")
    assert tumour["pixels"] == tumour_px and stroma["pixels"] == stroma_px
    assert tumour["objects"] == 2 and stroma["objects"] == 2 and bg["objects"] == 1
    assert tumour["area_um2"] == pytest.approx(tumour_px * 0.25)
    assert tumour["area_mm2"] == pytest.approx(tumour_px * 0.25e-6)
    assert tumour["percent_of_tissue"] == pytest.approx(100 * tumour_px / (tumour_px + stroma_px))
    assert bg["percent_of_tissue"] is None  # the background is not tissue
    assert t8.row("slide", TISSUE)["pixels"] == tumour_px + stroma_px
    assert t8.row("slide", NOT_PREDICTED)["pixels"] == 40 * 4

    t4 = measure_labels(source, block=8, connectivity=4, min_size=2)
    assert t4.row("slide", "stroma")["objects"] == 2  # corner contact does not join; the lone pixel is dropped
    assert t4.row("slide", "tumour")["objects"] == 2


def test_factor_scales_areas_and_min_size():
    lab = np.zeros((6, 6), np.uint8)
    lab[0, 0] = 2  # one classifier tile of 16 x 16 world px
    lab[2:4, 2:4] = 2  # four tiles
    table = measure_labels(LabelSource(lab, NAMES, factor=16), min_size=2 * 256)
    row = table.row("slide", "tumour")
    assert row["area_px2"] == 5 * 256 and row["objects"] == 1  # 1 tile < 512 px^2 <= 4 tiles
    assert "area_um2" not in row and "area_um2" not in table.columns  # no pixel size: px^2 only


def test_regions_with_holes_match_shapely_centres():
    shapely = pytest.importorskip("shapely")
    lab = _random_labels(5, (90, 110))
    origin, f = (100.0, 40.0), 2.0  # the labels start at world (100, 40) with 2 world px per pixel
    exterior = np.array([[110.3, 52.1], [260.7, 60.4], [250.2, 230.9], [120.8, 250.0]])  # (y, x)
    hole = np.array([[150.2, 100.3], [200.1, 110.6], [190.7, 170.2]])  # no pixel centre on an edge
    region = Region("annotation", [[exterior, hole]], classification="Tumor")
    poly = shapely.Polygon(exterior[:, ::-1], [hole[:, ::-1]])
    yc = origin[0] + np.arange(lab.shape[0]) * f + (f - 1) / 2
    xc = origin[1] + np.arange(lab.shape[1]) * f + (f - 1) / 2
    xx, yy = np.meshgrid(xc, yc)
    mask = shapely.contains_xy(poly, xx, yy)
    assert 1000 < mask.sum() < lab.size
    assert region.area == pytest.approx(poly.area)

    table = measure_labels(LabelSource(lab, NAMES, factor=f, origin_yx=origin), [region], block=16, min_size=8)
    for k, name in enumerate(NAMES):
        row = table.row("annotation", name)
        assert row["region_class"] == "Tumor"
        assert row["pixels"] == int((mask & (lab == k + 1)).sum())
        assert row["area_px2"] == row["pixels"] * 4
        assert row["objects"] == _direct_objects(lab, k + 1, 8, 2, mask)  # 8 px^2 = 2 pixels of 2 x 2
    assert table.row("annotation", NOT_PREDICTED)["pixels"] == int((mask & (lab == 0)).sum())
    assert table.row("annotation", "tumour")["region_area_px2"] == pytest.approx(poly.area)


class _CountingArray:
    """A labels array that records every window read from it."""

    def __init__(self, a):
        self.a, self.shape, self.reads = a, a.shape, []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.a[key]


def test_reads_are_blocks_and_regions_read_only_their_extent():
    arr = _CountingArray(_random_labels(1, (200, 300)))
    region = Region.box("small", 150, 170, 20, 45)
    measure_labels(LabelSource(arr, NAMES, chunks=(50, 50)), [region], block=100)
    sizes = [(k[0].stop - k[0].start) * (k[1].stop - k[1].start) for k in arr.reads]
    assert max(sizes) == 100 * 100  # never more than one block at a time
    whole, small = arr.reads[:6], arr.reads[6:]
    assert len(whole) == 6  # 2 x 3 blocks of 100 px for the whole array
    # the box [150, 170) x [20, 45) is read as one window with a one-pixel margin, not its block row
    assert small == [(slice(149, 171), slice(19, 46))]
    t = measure_labels(LabelSource(arr.a, NAMES), [region])
    assert sum(t.row("small", n)["pixels"] for n in NAMES) + t.row("small", NOT_PREDICTED)["pixels"] == 20 * 25


def test_csv_cells_are_safe_for_spreadsheets(tmp_path):
    assert safe_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert [safe_cell(v) for v in ("+x", "-x", "@a", "ok", None, -2, 0.5, "-3")] == [
        "'+x", "'-x", "'@a", "ok", "", "-2", "0.5", "-3"]
    lab = np.array([[1, 2], [2, 3]], np.uint8)
    table = measure_labels(LabelSource(lab, ["=bg()", "tumour", "-stroma"]), background=["=bg()"])
    path = write_csv(table, tmp_path / "m.csv")
    rows = list(csv.DictReader(open(path, newline="")))
    assert rows[0]["class"] == "'=bg()" and rows[2]["class"] == "'-stroma"
    assert [r["pixels"] for r in rows] == ["1", "2", "1", "3", "0"]
    assert float(rows[1]["percent_of_tissue"]) == pytest.approx(100 * 2 / 3)
    assert list(rows[0]) == ["region", "region_class", "class", "label", "pixels", "area_px2", "percent_of_tissue",
                             "objects", "min_object_px2", "region_area_px2"]


def test_bad_arguments_are_one_sentence():
    src = LabelSource(np.zeros((4, 4), np.uint8), NAMES)
    with pytest.raises(ValueError, match="4 or 8"):
        measure_labels(src, connectivity=6)
    with pytest.raises(ValueError, match="px\\^2 >= 0"):
        measure_labels(src, min_size=-1)
    with pytest.raises(ValueError, match="use one of background, tumour, stroma"):
        measure_labels(src, background="glass")


def test_prediction_store_in_micrometres(tmp_path, torch_one_thread):
    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.testing import PixelSegmenter

    img = np.zeros((96, 128), np.float32)
    img[10:40, 20:60] = 3.0  # class 0 where bright, class 1 elsewhere (logits 2x-1 vs 0 vs -x)
    img[60:70, 90:100] = 3.0
    pyramid = open_pyramid(img)
    pyramid.pixel_size, pyramid.unit = (0.5, 0.5), "micrometer"
    out = tmp_path / "p.zarr"
    model = PixelSegmenter(w=(2.0, 0.0, -1.0), b=(-1.0, 0.0, 0.0))
    predict(Recipe(out=str(out), region=(8, 88, 16, 120), tile=32, overlap=8, normalization={"policy": "none"}),
            model=model, pyramid=pyramid)
    from napari_muvit.engine.measure import open_labels

    source = open_labels(out)
    lab = np.asarray(source.labels[:])
    oy, ox = (int(v) for v in source.origin_yx)  # the store's level 0 starts at world (oy, ox)
    assert source.factor == 1 and int((lab > 0).sum()) == 80 * 104  # exactly the region was predicted
    region = Region.box("blob", 50, 80, 80, 110)  # world px, around the second blob
    table = measure_store(out, [region])
    c0 = table.row("slide", "class 0")
    assert c0["pixels"] == int((lab == 1).sum()) == 30 * 40 + 10 * 10
    assert c0["area_um2"] == pytest.approx(c0["pixels"] * 0.25) and c0["objects"] == 2
    assert table.row("blob", "class 0")["pixels"] == int((lab[50 - oy : 80 - oy, 80 - ox : 110 - ox] == 1).sum()) == 100
    assert table.row("blob", "class 0")["objects"] == 1
    assert table.row("blob", "class 1")["pixels"] == 30 * 30 - 100
    assert table.row("slide", "(tissue)")["pixels"] == 80 * 104  # no background class: every predicted pixel


def test_region_names_stay_unique():
    lab = np.full((4, 4), 2, np.uint8)
    boxes = [Region.box("slide", 0, 2, 0, 2), Region.box("a", 0, 4, 0, 4), Region.box("a", 2, 4, 2, 4)]
    table = measure_labels(LabelSource(lab, NAMES), boxes)
    pixels = {r["region"]: r["pixels"] for r in table.rows if r["class"] == "tumour"}
    assert pixels == {"slide": 16, "slide (2)": 4, "a": 16, "a (2)": 4}


def test_ranked_rois_exported_for_qupath_measure_their_tiles(tmp_path, torch_one_thread):
    from napari_muvit.data import open_pyramid
    from napari_muvit.data.qupath import read_qupath
    from napari_muvit.engine.export import export_geojson
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.rois import rank_rois
    from napari_muvit.engine.testing import PixelSegmenter

    img = np.zeros((96, 96), np.float32)
    img[30:50, 30:50] = 3.0
    out = tmp_path / "p.zarr"
    predict(Recipe(out=str(out), tile=32, overlap=8, normalization={"policy": "none"}),
            model=PixelSegmenter(w=(2.0, 0.0, -1.0), b=(-1.0, 0.0, 0.0)), pyramid=open_pyramid(img))
    rois = rank_rois(out, score="class:class 0", top_k=3)
    export_geojson(rois, tmp_path / "rois.geojson")
    regions = read_qupath(tmp_path / "rois.geojson")
    table = measure_store(out, regions)
    for roi, region in zip(rois, regions):
        y0, y1, x0, x1 = (int(v) for v in roi.bbox)  # the tile's owned square, half-open world px
        rows = [table.row(region.name, c) for c in ("class 0", "class 1", "class 2", NOT_PREDICTED)]
        assert sum(r["pixels"] for r in rows) == (y1 - y0) * (x1 - x0)  # exactly the tile's pixels
        assert rows[0]["pixels"] == int((img[y0:y1, x0:x1] > 0).sum())
