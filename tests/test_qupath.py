"""QuPath GeoJSON round trip: annotations in QuPath's schema and pixel-edge frame <-> world regions."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

geojson = pytest.importorskip("geojson")
shapely = pytest.importorskip("shapely")
from shapely.geometry import shape  # noqa: E402

from napari_muvit.cli import main  # noqa: E402
from napari_muvit.data.qupath import read_qupath, regions_from_geojson, write_qupath  # noqa: E402
from napari_muvit.data.regions import label_image, region_mask  # noqa: E402

# What QuPath 0.4+ writes with File > Export objects as GeoJSON ("Pretty JSON", FeatureCollection): [x, y] in
# full-resolution pixels, pixel edges on integers.
QUPATH_DOC = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "id": "0f5a4f2e-3c5e-4a43-9f35-0d2b7a9f7a10",
         "geometry": {"type": "Polygon", "coordinates": [
             [[10, 20], [50, 20], [50, 60], [10, 60], [10, 20]],
             [[20, 30], [30, 30], [30, 40], [20, 40], [20, 30]]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]},
                        "isLocked": False}},
        {"type": "Feature", "id": "7c1e9a52-1d0e-4b5a-8f3b-52f0f6f1c2aa",
         "geometry": {"type": "MultiPolygon", "coordinates": [
             [[[60, 5], [70, 5], [70, 15], [60, 15], [60, 5]]],
             [[[80.5, 40.25], [95.75, 44.5], [88.25, 70.5], [80.5, 40.25]]]]},
         "properties": {"objectType": "annotation", "name": "Stroma patch",
                        "classification": {"name": "Stroma", "color": [150, 200, 150]}}},
        {"type": "Feature", "id": "1d0c6d3b-9c45-4ad2-9d8f-2c1b6a7e5f00",
         "geometry": {"type": "LineString", "coordinates": [[0, 0], [30, 30]]},
         "properties": {"objectType": "annotation"}},
    ],
}


def _qupath_pixels(doc_geometry, shape_yx):
    """Direct count: pixels whose centre (j + 0.5, i + 0.5 in QuPath's frame) lies in the geometry."""
    geom = shape(doc_geometry)
    ii, jj = np.mgrid[: shape_yx[0], : shape_yx[1]]
    return shapely.contains_xy(geom, jj + 0.5, ii + 0.5)


def test_input_is_valid_geojson_and_shapely():
    obj = geojson.loads(json.dumps(QUPATH_DOC))
    assert obj.is_valid
    assert all(shape(f["geometry"]).is_valid for f in QUPATH_DOC["features"])


def test_read_converts_pixel_edges_to_world_centres(tmp_path):
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(QUPATH_DOC))
    regions = read_qupath(path)
    assert [r.name for r in regions] == ["Tumor 1", "Stroma patch"]  # the line has no area: skipped
    assert regions_from_geojson(QUPATH_DOC).skipped == 1
    tumour = regions[0]
    assert tumour.classification == "Tumor" and tumour.color == (200, 0, 0)
    assert tumour.properties["id"] == "0f5a4f2e-3c5e-4a43-9f35-0d2b7a9f7a10"
    ext, hole = tumour.polygons[0]
    assert ext[0].tolist() == [19.5, 9.5]  # QuPath (x=10, y=20) edge -> world (y, x) = (19.5, 9.5)
    assert tumour.area == 40 * 40 - 10 * 10
    assert tumour.bounds == (19.5, 59.5, 9.5, 49.5)
    # pixels held: columns 10..49, rows 20..59 (QuPath pixel j spans [j, j+1)), minus the hole's 10 x 10
    inside = tumour.contains_centres(np.arange(80), np.arange(100))
    assert inside.sum() == 1500
    assert np.array_equal(np.flatnonzero(inside.any(0)), np.arange(10, 50))
    assert np.array_equal(np.flatnonzero(inside.any(1)), np.arange(20, 60))
    assert not inside[30:40, 20:30].any() and inside[29, 20] and inside[40, 29]
    for feature, region in zip(QUPATH_DOC["features"], regions):
        direct = _qupath_pixels(feature["geometry"], (80, 100))
        assert np.array_equal(region.contains_centres(np.arange(80), np.arange(100)), direct)


def test_older_schemas_list_of_features_colorRGB_and_plain_class():
    doc = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 0]]]},
         "properties": {"classification": {"name": "Tumor", "colorRGB": -3670016}}},  # 0xFFC80000
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 0]]]},
         "properties": {"classification": "Immune cells"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 0]]]},
         "properties": {"classification": {"name": "Tumor", "colorRGB": -3670016}}},
    ]
    regions = regions_from_geojson(doc).regions
    assert [(r.name, r.classification, r.color) for r in regions] == [
        ("Tumor 1", "Tumor", (200, 0, 0)), ("Immune cells 2", "Immune cells", None), ("Tumor 3", "Tumor", (200, 0, 0))]
    same = regions_from_geojson([{**doc[0], "properties": {"name": "A"}}, {**doc[1], "properties": {"name": "A"}}])
    assert [r.name for r in same.regions] == ["A", "A (2)"]  # names stay unique for the table


def test_write_back_is_valid_and_round_trips(tmp_path):
    regions = regions_from_geojson(QUPATH_DOC).regions
    out = write_qupath(regions, tmp_path / "back.geojson", {"Tumor 1": {"Tumor: area um^2": 375.0}})
    doc = json.loads(out.read_text())
    assert geojson.loads(out.read_text()).is_valid
    assert [f["id"] for f in doc["features"]] == [f["id"] for f in QUPATH_DOC["features"][:2]]
    for written, original in zip(doc["features"], QUPATH_DOC["features"]):
        g = shape(written["geometry"])
        assert g.is_valid and g.equals(shape(original["geometry"]))  # same coordinates, QuPath frame
        assert written["properties"]["objectType"] == "annotation"
        assert written["properties"]["classification"] == original["properties"]["classification"]
        polys = [g] if g.geom_type == "Polygon" else list(g.geoms)
        for p in polys:  # RFC 7946 winding: exterior counter-clockwise, holes clockwise
            assert p.exterior.is_ccw and all(not h.is_ccw for h in p.interiors)
    assert doc["features"][0]["geometry"]["coordinates"][0][0] == [10, 20]
    assert doc["features"][0]["properties"]["measurements"] == {"Tumor: area um^2": 375.0}
    assert doc["features"][1]["properties"]["name"] == "Stroma patch"
    again = regions_from_geojson(doc).regions
    for a, b in zip(regions, again):
        assert a.name == b.name and a.area == pytest.approx(b.area)


def test_label_image_and_mask_for_training_and_prediction():
    from napari_muvit.engine.training.annotations import check_classes, open_label_image

    regions = regions_from_geojson(QUPATH_DOC).regions
    lab = label_image(regions, ["Stroma", "Tumor"], (80, 100), chunks=32)
    assert lab.chunks[0] == (32, 32, 16)
    arr = np.asarray(lab)
    tumour = _qupath_pixels(QUPATH_DOC["features"][0]["geometry"], (80, 100))
    stroma = _qupath_pixels(QUPATH_DOC["features"][1]["geometry"], (80, 100))
    assert np.array_equal(arr == 2, tumour) and np.array_equal(arr == 1, stroma)
    assert int((arr == 0).sum()) == 8000 - tumour.sum() - stroma.sum()
    summary, names = check_classes(open_label_image(lab, (80, 100)), ["Stroma", "Tumor"], 16)
    assert names == ["Stroma", "Tumor"] and summary.totals[2] == 1500
    with pytest.raises(ValueError, match="not one of Tumor"):
        label_image(regions, ["Tumor"], (80, 100))

    mask = region_mask(regions, (80, 100), factor=4)
    assert mask.shape == (20, 25)
    assert mask[5:15, 3:12].any() and not mask[0, 0]
    # a level-4 pixel is in the mask when its centre (4 k + 1.5 world) is: rows 5..14 for y 20..59
    assert np.flatnonzero(mask[:, 3]).tolist() == list(range(5, 15))  # column 3: world x 13.5


@pytest.mark.parametrize("doc, words", [
    ("not json", "is not JSON"),
    (json.dumps({"type": "FeatureCollection", "features": [QUPATH_DOC["features"][2]]}), "holds no Polygon"),
    (json.dumps({"type": "Topology"}), "is not a GeoJSON"),
    (json.dumps([{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}]),
     "at least 3"),
])
def test_bad_files_are_one_sentence(tmp_path, doc, words):
    path = tmp_path / "bad.geojson"
    path.write_text(doc)
    with pytest.raises(ValueError, match=words):
        read_qupath(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_qupath(tmp_path / "missing.geojson")


def test_measure_command_with_qupath_regions(tmp_path, capsys, torch_one_thread):
    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.testing import PixelSegmenter

    img = np.zeros((80, 100), np.float32)
    img[25:45, 15:35] = 3.0  # class 0 under part of the tumour annotation
    pyramid = open_pyramid(img)
    pyramid.pixel_size, pyramid.unit = (0.25, 0.25), "micrometer"
    store = tmp_path / "p.zarr"
    predict(Recipe(out=str(store), tile=32, overlap=8, normalization={"policy": "none"}),
            model=PixelSegmenter(w=(2.0, 0.0, -1.0), b=(-1.0, 0.0, 0.0)), pyramid=pyramid)
    regions_file = tmp_path / "qupath.geojson"
    regions_file.write_text(json.dumps(QUPATH_DOC))
    table, back = tmp_path / "m.csv", tmp_path / "measured.geojson"
    rc = main(["measure", str(store), "--regions", str(regions_file), "--min-size", "4", "--out", str(table),
               "--geojson", str(back), "--quiet"])
    assert rc == 0
    rows = {(r["region"], r["class"]): r for r in csv.DictReader(open(table, newline=""))}
    tumour = _qupath_pixels(QUPATH_DOC["features"][0]["geometry"], (80, 100))
    bright = np.zeros((80, 100), bool)
    bright[25:45, 15:35] = True
    expected = int((tumour & bright).sum())  # 20 x 20 square minus the hole's 10 x 10
    assert expected == 300
    assert int(rows[("Tumor 1", "class 0")]["pixels"]) == expected
    assert float(rows[("Tumor 1", "class 0")]["area_um2"]) == pytest.approx(expected * 0.0625)
    assert int(rows[("Tumor 1", "class 0")]["objects"]) == 1
    assert int(rows[("slide", "class 0")]["pixels"]) == 400
    assert rows[("Tumor 1", "class 0")]["region_class"] == "Tumor"
    doc = json.loads(back.read_text())
    m = doc["features"][0]["properties"]["measurements"]
    assert m["class 0: area um^2"] == pytest.approx(300 * 0.0625) and m["class 0: objects"] == 1
    assert m["class 0: % of tissue"] == pytest.approx(100 * 300 / 1500)  # no background class: all is tissue

    capsys.readouterr()
    assert main(["measure", str(store), "--out", str(table)]) == 2  # an existing table is kept
    assert "already exists" in capsys.readouterr().err
    assert main(["measure", str(store), "--out", str(store / "m.csv"), "--overwrite"]) == 2
    assert "lies inside the input" in capsys.readouterr().err and not (store / "m.csv").exists()
    assert main(["measure", str(store), "--out", str(table), "--overwrite", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["measure", str(store), "--background", "class 1", "--connectivity", "4", "--quiet"]) == 0
    printed = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    by_class = {r["class"]: r for r in printed}
    assert [r["region"] for r in printed] == ["slide"] * 5 and "area_um2" in printed[0]
    assert by_class["(tissue)"]["pixels"] == str(8000 - int(by_class["class 1"]["pixels"]))  # class 1 is not tissue
    assert by_class["class 1"]["percent_of_tissue"] == ""
    assert main(["measure", str(store), "--geojson", str(back)]) == 2
    assert "give --regions" in capsys.readouterr().err
    assert main(["measure", str(tmp_path / "nope.zarr")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_annotations_as_prediction_mask(tmp_path, torch_one_thread):
    import tifffile

    from napari_muvit.data.qupath import annotation_mask
    from napari_muvit.engine.measure import open_labels
    from napari_muvit.engine.testing import random_slide, tiny_segmenter
    from napari_muvit.model import save_model

    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, (random_slide((96, 128), seed=3) * 1000).astype(np.uint16))
    save_model(tiny_segmenter(), tmp_path / "model")
    ann = tmp_path / "ann.geojson"
    ann.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[30, 10], [50, 10], [50, 20], [30, 20], [30, 10]]]},
        "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}}]}))
    mask, fy, fx = annotation_mask(ann, (96, 128))
    assert (fy, fx) == (1.0, 1.0) and mask.sum() == 20 * 10 and mask[10:20, 30:50].all()
    mask, fy, _ = annotation_mask(ann, (9000, 128))
    assert fy == 4.0 and mask.shape == (2250, 32) and mask.sum() == 5 * 3  # level-4 centres 4 k + 1.5 inside

    out = tmp_path / "p.zarr"
    assert main(["predict", str(slide), "--model", str(tmp_path / "model"), "--tile", "32", "--overlap", "8",
                 "--mask", str(ann), "--out", str(out)]) == 0
    source = open_labels(out)
    lab = np.asarray(source.labels[:])
    oy, ox = (int(v) for v in source.origin_yx)
    predicted = np.zeros((96, 128), bool)
    predicted[oy : oy + lab.shape[0], ox : ox + lab.shape[1]] = lab > 0
    # stride 24: only the owned squares rows [0, 24) x columns [24, 48) and [48, 72) hold annotated pixels
    expected = np.zeros((96, 128), bool)
    expected[0:24, 24:72] = True
    assert np.array_equal(predicted, expected)


def test_centres_on_edges_belong_to_one_of_two_touching_regions():
    from napari_muvit.data.regions import Region

    # world boxes on integer coordinates put pixel centres exactly on the edges: [top, bottom) x [left, right)
    left = Region("left", [[np.array([[0.0, 0.0], [0.0, 4.0], [4.0, 4.0], [4.0, 0.0]])]])
    right = Region("right", [[np.array([[0.0, 4.0], [0.0, 8.0], [4.0, 8.0], [4.0, 4.0]])]])
    a = left.contains_centres(np.arange(6), np.arange(10))
    b = right.contains_centres(np.arange(6), np.arange(10))
    assert not (a & b).any() and (a | b).sum() == 4 * 8
    assert np.array_equal(np.flatnonzero(a[0]), np.arange(0, 4)) and np.array_equal(np.flatnonzero(b[0]), np.arange(4, 8))
    assert np.array_equal(np.flatnonzero(a[:, 0]), np.arange(0, 4))


def test_annotations_as_segmentation_training_labels(tmp_path):
    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.testing import random_slide
    from napari_muvit.engine.training.finetune import make_task

    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[8, 8], [40, 8], [40, 24], [8, 24], [8, 8]]]},
         "properties": {"classification": {"name": "Tumor"}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[64, 64], [96, 64], [96, 120], [64, 120], [64, 64]]]},
         "properties": {"classification": {"name": "Stroma"}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [128, 0], [128, 128], [0, 128], [0, 0]]]},
         "properties": {"name": "unclassified outline"}},
    ]}
    path = tmp_path / "train.geojson"
    path.write_text(json.dumps(doc))
    pyramid = open_pyramid(random_slide((128, 128), seed=1))
    data = make_task("segmentation", pyramid, path, (1, 4), 32, None, 0.2, 0, None, False)
    assert data.class_names == ["Stroma", "Tumor"]  # alphabetical; the unclassified outline labels nothing
    assert data.summary.totals[:3].tolist() == [128 * 128 - 32 * 16 - 32 * 56, 32 * 56, 32 * 16]
    lab = np.asarray(data.labels)
    assert lab[8:24, 8:40].min() == 2 and lab[64:120, 64:96].min() == 1 and lab[:8].max() == 0
    doc["features"] = doc["features"][2:]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="has a classification"):
        make_task("segmentation", pyramid, path, (1, 4), 32, None, 0.2, 0, None, False)
