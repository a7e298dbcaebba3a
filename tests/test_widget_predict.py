"""The MuViT predict dock widget in a real viewer: levels, a run, world alignment, bad inputs, settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qtpy.QtCore import Qt

SLIDE_SIZE, SLIDE_SEED = 512, 3
LEVELS, PATCH, CROP = (1, 4, 16), 8, 64


@pytest.fixture(scope="session")
def plugin_dirs(tmp_path_factory):
    """Cache (sample slide, runs) and settings in temporary folders for the whole session."""
    import os

    root = tmp_path_factory.mktemp("muvit")
    old = {k: os.environ.get(k) for k in ("NAPARI_MUVIT_CACHE_DIR", "NAPARI_MUVIT_SETTINGS_DIR")}
    os.environ["NAPARI_MUVIT_CACHE_DIR"] = str(root / "cache")
    os.environ["NAPARI_MUVIT_SETTINGS_DIR"] = str(root / "settings")
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_model(plugin_dirs):
    """A small random segmentation model folder with the demo model's geometry (levels, crop, patch)."""
    from napari_muvit.engine.testing import tiny_segmenter
    from napari_muvit.model import save_model

    torch.set_num_threads(1)
    return str(save_model(tiny_segmenter(levels=LEVELS, patch=PATCH, crop=CROP, n_classes=3), plugin_dirs / "tiny"))


@pytest.fixture
def sample_viewer(make_napari_viewer, plugin_dirs, tmp_path, monkeypatch):
    from napari_muvit.widgets._reader import read_slide
    from napari_muvit.widgets._sample import sample_slide_path

    monkeypatch.setenv("NAPARI_MUVIT_SETTINGS_DIR", str(tmp_path / "settings"))  # each test starts fresh
    viewer = make_napari_viewer()
    for data, kwargs, kind in read_slide(str(sample_slide_path(size=SLIDE_SIZE, seed=SLIDE_SEED))):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer


@pytest.fixture
def errors(monkeypatch):
    """Sentences shown as napari error notifications by the widget."""
    from napari_muvit.widgets.predict import run_inputs

    shown: list[str] = []
    real = run_inputs.notify_error

    def record(sentence):
        shown.append(sentence)
        real(sentence)

    monkeypatch.setattr(run_inputs, "notify_error", record)
    from napari_muvit.widgets.predict import dock as predict

    monkeypatch.setattr(predict, "notify_error", record)
    return shown


def make_widget(viewer, model_folder, region=None):
    from napari_muvit.widgets.predict.dock import PredictWidget

    w = PredictWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model.source.setCurrentText("folder")
    w.model.folder.setText(model_folder)
    w._on_model_changed()
    w.model.batch.setValue(8)
    if region is not None:
        y0, y1, x0, x1 = region
        shapes = viewer.add_shapes([np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)],
                                   shape_type="rectangle", name="roi box")
        w.shapes_combo.setCurrentText(shapes.name)
        w.region_mode.setCurrentText("shapes layer")
    return w


def wait_for_run(qtbot, w, timeout=60_000):
    qtbot.waitUntil(lambda: w.job is not None and not w.job.running and w.run_button.isEnabled(), timeout=timeout)


def test_widget_lists_pyramid_and_model_levels(sample_viewer, tiny_model):
    w = make_widget(sample_viewer, tiny_model)
    assert w.image_combo.currentText() == sample_viewer.layers[0].name
    table = w.levels.table
    assert [table.item(r, 0).text() for r in range(table.rowCount())] == ["x1", "x2", "x4"]
    assert table.item(2, 2).text() == "128 x 128"
    assert w.levels.chosen() == LEVELS
    lines = w.levels.explanation.text().splitlines()
    assert lines[1].startswith("x4: read directly")
    assert lines[2].startswith("x16: not stored") and "averaging 4x4 pixel blocks of level x4" in lines[2]
    # a segmentation head was trained on all its levels together: no box can be unticked
    w.levels.set_chosen((1, 4))
    assert w.levels.chosen() == LEVELS and not any(box.isEnabled() for box in w.levels.boxes.values())
    assert "segmentation" in w.model.card.text() and "crop 64 px" in w.model.card.text()
    # the context preview (off until ticked) draws one outline per ticked level, nested around the region centre
    w.region_mode.setCurrentText("whole slide")
    assert "MuViT context" not in sample_viewer.layers
    w.context.setChecked(True)
    outlines = sample_viewer.layers["MuViT context"]
    assert len(outlines.data) == 3
    (a0, a1), (b0, b1), _ = [(np.min(r, axis=0), np.max(r, axis=0)) for r in outlines.data]
    assert np.allclose(a1 - a0, CROP) and np.allclose(b1 - b0, 4 * CROP)
    assert np.all(b0 <= a0) and np.all(a1 <= b1)


def test_opening_the_dock_adds_no_layer_and_the_preview_moves_in_place(sample_viewer, tiny_model, qtbot, monkeypatch):
    """Opening the dock adds no layer (napari stalls the viewer for every layer added), even when the crop preview
    was left ticked; the preview comes once the dock is shown, and following the cursor moves its outlines
    instead of rebuilding the layer (same layer, same colours and labels, new positions)."""
    from napari_muvit.widgets.predict import settings as predict_settings
    from napari_muvit.widgets.predict.dock import DEFAULTS, SETTINGS_NAME, PredictWidget

    names = [ly.name for ly in sample_viewer.layers]
    w = PredictWidget(sample_viewer)
    assert not w.context.isChecked()  # off by default
    assert [ly.name for ly in sample_viewer.layers] == names
    w.close()
    predict_settings.save_settings(SETTINGS_NAME, {**DEFAULTS, "model": "folder", "model_folder": tiny_model,
                                                   "context": True, "region_mode": "whole slide"})
    w = PredictWidget(sample_viewer)
    assert w.context.isChecked() and [ly.name for ly in sample_viewer.layers] == names
    sample_viewer.window.add_dock_widget(w)
    qtbot.waitUntil(lambda: "MuViT context" in sample_viewer.layers, timeout=5000)
    outlines = sample_viewer.layers["MuViT context"]
    colors, texts = outlines.edge_color.copy(), list(outlines.text.values)
    before = [np.mean(r, axis=0) for r in outlines.data]
    w.update_context_preview(center_yx=(100.0, 200.0))
    assert sample_viewer.layers["MuViT context"] is outlines
    after = [np.mean(r, axis=0) for r in outlines.data]
    # each level's crop is snapped to that level's pixel grid: its centre is within one of its pixels
    assert all(np.allclose(a, (100.0, 200.0), atol=f) for a, f in zip(after, LEVELS))
    assert not np.allclose(before[0], after[0])
    assert np.array_equal(outlines.edge_color, colors) and list(outlines.text.values) == texts == ["x1", "x4", "x16"]


def test_run_gives_world_aligned_layers(sample_viewer, tiny_model, qtbot):
    """Probabilities and labels sit on the image pixels they were computed from (checked against the
    model run directly on one tile's crops)."""
    import zarr

    from napari_muvit.data import Normalizer, open_pyramid
    from napari_muvit.model import load_model

    region = (96, 224, 160, 288)  # y0, y1, x0, x1 world px
    w = make_widget(sample_viewer, tiny_model, region)
    w.model.overlap.setValue(16)
    assert w.run() is not None
    wait_for_run(qtbot, w)
    assert w.job.error is None and "done" in w.status.text()
    probs = sample_viewer.layers["MuViT p(class 1)"]
    labels = sample_viewer.layers["MuViT labels"]
    # the store spans the slide: level 0 pixel (y, x) is world (y, x); only the region is written
    np.testing.assert_allclose(probs.scale, (1, 1))
    np.testing.assert_allclose(probs.translate, (0, 0))
    np.testing.assert_allclose(labels.translate, (0, 0))
    # reference: the model run directly on the crops of the middle tile (row 1, column 1)
    root = zarr.open_group(str(w.last_store), mode="r")
    meta = dict(root.attrs["napari_muvit"])
    grid = meta["grid"]
    tile, overlap = grid["tile"], grid["overlap"]
    stride = tile - overlap
    oy, ox = 96 - overlap // 2 + stride, 160 - overlap // 2 + stride  # world of the tile's first pixel
    center = (oy + (tile - 1) / 2, ox + (tile - 1) / 2)
    pyramid = open_pyramid(w.image.source)
    img, bbox = pyramid.crops(center, LEVELS, tile, normalizer=Normalizer.from_dict(meta["recipe"]["normalization"]))
    model = load_model(tiny_model)
    with torch.inference_mode():
        ref = torch.softmax(model(torch.from_numpy(img)[None], torch.from_numpy(bbox)[None]), 1)[0].numpy()
    # pixels at least `overlap` from the tile edge get blend weight 1 from this tile only
    for py, px in [(oy + tile // 2, ox + tile // 2), (oy + overlap, ox + overlap), (oy + tile - overlap - 1, ox + 20)]:
        data_idx = np.round(probs.world_to_data((py, px))).astype(int)
        layer_value = float(np.asarray(probs.data[0])[tuple(data_idx)]) if probs.multiscale else \
            float(np.asarray(probs.data)[tuple(data_idx)])
        assert layer_value / 255 == pytest.approx(float(ref[1, py - oy, px - ox]), abs=0.5 / 255 + 1e-4)  # uint8
        lab_idx = np.round(labels.world_to_data((py, px))).astype(int)
        lab_data = labels.data[0] if labels.multiscale else labels.data
        assert int(np.asarray(lab_data)[tuple(lab_idx)]) == int(ref[:, py - oy, px - ox].argmax()) + 1


def test_bad_inputs_become_notifications(make_napari_viewer, tiny_model, plugin_dirs, errors):
    viewer = make_napari_viewer()
    w = make_widget(viewer, tiny_model)
    assert w.run() is None
    assert "no image layer" in errors[-1]
    viewer.add_image(np.zeros((4, 64, 64), np.float32), name="stack")
    assert w.run() is None
    assert "'stack' is 3D" in errors[-1] and "2D" in errors[-1]
    viewer.layers.clear()
    viewer.add_image(np.zeros((300, 300, 3), np.uint8), name="he", rgb=True)
    assert w.run() is None
    assert "RGB colour" in errors[-1] and "expects 1 channel" in errors[-1]
    viewer.layers.clear()
    viewer.add_image(np.zeros((300, 300), np.float32), name="gray")
    w.region_mode.setCurrentText("current view")
    viewer.scene.camera.center = (0, 5000, 5000)
    assert w.run() is None
    assert "outside the image" in errors[-1]
    assert len(errors) == 4 and w.job is None  # nothing was started


def test_settings_persist_between_widgets(sample_viewer, tiny_model):
    from napari_muvit.widgets.predict.dock import PredictWidget

    w = make_widget(sample_viewer, tiny_model)
    w.model.tile.setValue(96)
    w.model.device.setCurrentText("cpu")
    w.region_mode.setCurrentText("whole slide")
    w.save_settings()
    again = PredictWidget(sample_viewer)
    assert again.model.folder.text() == tiny_model and again.model.source.currentText() == "folder"
    assert again.levels.chosen() == LEVELS
    assert (again.model.tile.value(), again.model.device.currentText()) == (96, "cpu")
    assert again.region_mode.currentText() == "whole slide"


def test_controls_offer_only_values_the_model_accepts(sample_viewer, tiny_model, errors, monkeypatch, qtbot):
    """Tile in steps of the patch size (typed values snap), bad overlaps refused before Run, and a run that
    fails is not remembered into the next widget."""
    from napari_muvit.widgets.predict import dock as predict_module
    from napari_muvit.widgets.predict.dock import PredictWidget
    from napari_muvit.widgets.predict.settings import load_settings
    from napari_muvit.widgets.workers import EngineJob

    w = make_widget(sample_viewer, tiny_model)
    assert w.model.tile.singleStep() == PATCH
    w.model.tile.setValue(100)  # typed: snaps to the nearest multiple of the patch size on leaving the box
    w.model.tile.editingFinished.emit()
    assert w.model.tile.value() == 96
    w.model.tile.setValue(100)  # set without leaving the box: refused before anything starts
    assert w.run() is None and "tile 100 px is not a multiple of the model's patch size 8 px" in errors[-1]
    w.model.tile.setValue(64)
    w.model.overlap.setValue(48)
    assert w.run() is None and "overlap 48 px is more than half the tile (64 px)" in errors[-1]
    assert w.job is None
    # a run the engine refuses: its settings are not kept for the next napari start
    w.model.overlap.setValue(16)
    w.region_mode.setCurrentText("whole slide")
    monkeypatch.setattr(predict_module, "make_prediction_job", lambda *a, **k: EngineJob(
        lambda progress, cancel: (_ for _ in ()).throw(ValueError("the engine refused this run.")),
        description="failing run"))
    before = load_settings(predict_module.SETTINGS_NAME, predict_module.DEFAULTS)
    job = w.run()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running and w.run_button.isEnabled(), timeout=10_000)
    assert errors[-1] == "the engine refused this run."
    w.close()
    assert load_settings(predict_module.SETTINGS_NAME, predict_module.DEFAULTS) == before
    assert PredictWidget(sample_viewer).model.overlap.value() != 16


def test_cancel_mid_run_then_resume_and_rois(sample_viewer, tiny_model, qtbot, tmp_path):
    """Cancel stops the engine within 2 s and keeps finished tiles; Run continues the same store; the
    GUI thread keeps ticking meanwhile; ROIs are listed, clickable and exportable."""
    import json

    from qtpy.QtCore import QTimer

    from napari_muvit.widgets.region import scene_camera

    w = make_widget(sample_viewer, tiny_model)
    w.region_mode.setCurrentText("whole slide")
    w.model.batch.setValue(1)  # many small batches: the cancel lands mid-run
    job = w.run()
    qtbot.waitUntil(lambda: job.done >= 2 or not job.running, timeout=60_000)
    assert job.running, job.error
    w.cancel()
    wait_for_run(qtbot, w)  # how fast a cancel lands is measured by benchmarks/heartbeat.py, not asserted here
    assert job.stopped_at >= job.cancel_at
    assert "cancelled after" in w.status.text() and w.resumable == w.last_store
    labels = sample_viewer.layers["MuViT labels"]
    predicted = np.count_nonzero(np.asarray(labels.data[0] if labels.multiscale else labels.data))
    assert 0 < predicted < SLIDE_SIZE * SLIDE_SIZE  # some tiles kept, not all
    first_store, done_before = w.last_store, job.done

    ticks: list[int] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    again = w.run()
    assert w.last_recipe.resume and w.last_store == first_store  # same store, continued
    wait_for_run(qtbot, w)
    timer.stop()
    assert again.error is None and again._done0 >= done_before  # finished tiles were not recomputed
    labels = sample_viewer.layers["MuViT labels"]
    final = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    assert np.count_nonzero(final) == SLIDE_SIZE * SLIDE_SIZE
    assert len(ticks) > 20  # the GUI thread kept ticking during the run (gap sizes: benchmarks/heartbeat.py)

    n = w.rois.rowCount()
    assert 1 <= n <= 20
    scores = [float(w.rois.item(r, 1).text()) for r in range(n)]
    assert scores == sorted(scores, reverse=True)
    y, x = float(w.rois.item(0, 2).text()), float(w.rois.item(0, 3).text())
    w.rois.cellClicked.emit(0, 0)
    np.testing.assert_allclose(scene_camera(sample_viewer).center[-2:], (y, x), atol=0.51)
    roi_layer = sample_viewer.layers["MuViT ROIs"]
    assert list(roi_layer.features["rank"]) == list(range(1, n + 1))
    assert w.roi_panel.score.currentText() == "foreground"  # the store's default, first in the box
    geojson = w.export_rois("geojson", tmp_path / "rois.geojson")
    features = json.loads(geojson.read_text())["features"]
    assert [f["properties"]["rank"] for f in features] == list(range(1, n + 1))
    assert [f"{f['properties']['score']:.3f}" for f in features] == [w.rois.item(r, 1).text() for r in range(n)]
    csv_path = w.export_rois("csv", tmp_path / "rois.csv")
    assert len(csv_path.read_text().strip().splitlines()) == n + 1


def _listed(panel):
    t = panel.table
    return [(int(t.item(r, 0).text()), t.item(r, 1).text(), float(t.item(r, 2).text()), float(t.item(r, 3).text()))
            for r in range(t.rowCount())]


def test_roi_list_box_layer_and_export_always_agree(make_napari_viewer, qtbot, tmp_path):
    """A store whose first class is background: the default ranking (shown in the box) lists no background
    ROI; choosing another score re-ranks list and layer; exports write exactly the listed rows, in order."""
    import csv
    import json

    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.testing import PixelSegmenter
    from napari_muvit.widgets.predict.roi_panel import RoiPanel
    from napari_muvit.widgets.prediction_job import load_outputs

    img = np.zeros((256, 256), np.float32)
    img[40:70, 150:190] = 3.0
    img[180:200, 30:45] = 1.5
    model = PixelSegmenter(w=(0.0, 2.0, 0.8), b=(2.0, 0.0, 0.0))
    model.card.class_names = ["background", "cell", "stroma"]
    store = tmp_path / "p.zarr"
    predict(Recipe(out=str(store), tile=32, overlap=8, normalization={"policy": "none"}), model=model,
            pyramid=open_pyramid(img))
    viewer = make_napari_viewer()
    reports = []
    panel = RoiPanel(viewer, lambda: None, reports.append)
    panel.show(store, load_outputs(store).rois)
    box = [panel.score.itemText(k) for k in range(panel.score.count())]
    assert box == ["foreground", "class:background", "class:cell", "class:stroma", "entropy"]
    assert panel.score.currentText() == "foreground"
    layer = viewer.layers["MuViT ROIs"]
    assert "background" not in set(layer.features["class"]) and layer.features["class"][0] == "cell"
    listed = _listed(panel)
    assert [r[0] for r in listed] == list(range(1, len(listed) + 1))
    assert 40 <= listed[0][2] <= 70 and 150 <= listed[0][3] <= 190  # the bright blob first

    def exported():
        gj = json.loads(panel.export_rois("geojson", tmp_path / "r.geojson").read_text())["features"]
        rows = list(csv.DictReader(open(panel.export_rois("csv", tmp_path / "r.csv"))))
        assert [f["properties"]["rank"] for f in gj] == [int(r["rank"]) for r in rows]
        return [(int(r["rank"]), f"{float(r['score']):.3f}", round(float(r["centroid_y"])),
                 round(float(r["centroid_x"]))) for r in rows], [f["properties"]["classification"]["name"] for f in gj]

    def as_listed(rows):
        return [(k, s, round(y), round(x)) for k, s, y, x in rows]

    got, classes = exported()
    assert got == as_listed(listed) and "background" not in classes
    # the user picks another score: box, list, layer and export all follow it
    panel.score.setCurrentText("class:background")
    panel.score.activated.emit(panel.score.currentIndex())
    qtbot.waitUntil(lambda: panel.ranked is not None and panel.ranked.score == "class:background", timeout=20_000)
    qtbot.waitUntil(lambda: panel.export_csv.isEnabled(), timeout=20_000)
    relisted = _listed(panel)
    assert relisted != listed and float(relisted[0][1]) > 0.7
    assert list(viewer.layers["MuViT ROIs"].features["class"])[0] == "background"
    got, classes = exported()
    assert got == as_listed(relisted) and classes[0] == "background"
    assert panel.score.currentText() == "class:background"


def test_demo_model_predictions_sit_on_ground_truth_objects(make_napari_viewer, plugin_dirs, qtbot, tmp_path,
                                                            monkeypatch):
    """The built-in demo model on the sample slide: ground-truth objects and the pixels predicted as their
    class overlap in world coordinates, and the overlap is best with no shift at all."""
    from napari_muvit.widgets._reader import read_slide
    from napari_muvit.widgets._sample import sample_slide_path

    monkeypatch.setenv("NAPARI_MUVIT_SETTINGS_DIR", str(tmp_path / "settings"))
    viewer = make_napari_viewer()
    for data, kwargs, kind in read_slide(str(sample_slide_path(size=2048, seed=0))):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    region = (896, 1152, 896, 1152)
    w = make_widget(viewer, "demo", region)
    w.model.source.setCurrentText("demo")
    w._on_model_changed()
    assert w.model.info.class_names[0] == "background" and w.levels.chosen() == (1, 4, 16)
    assert w.run() is not None
    wait_for_run(qtbot, w)
    assert w.job.error is None
    gt_layer, pred = viewer.layers["ground_truth"], viewer.layers["MuViT labels"]
    gt = np.asarray(gt_layer.data[0])[896:1152, 896:1152]
    ys, xs = np.nonzero(gt > 1)  # ground truth and prediction share values: 1 = background, 2.. = cell classes
    assert len(ys) > 500  # the region holds ground-truth objects
    world = np.stack([ys + 896, xs + 896], axis=1).astype(float)
    world = np.asarray([gt_layer.data_to_world(p) for p in world])  # GT pixel centres in napari's world
    pred_data = np.asarray(pred.data[0] if pred.multiscale else pred.data)

    def agreement(shift):
        idx = np.round([pred.world_to_data(p + shift) for p in world]).astype(int)
        inside = np.all((idx >= 0) & (idx < pred_data.shape), axis=1)
        got = pred_data[idx[inside, 0], idx[inside, 1]]
        return float(np.mean(got == gt[ys[inside], xs[inside]]))

    at_zero = agreement(np.zeros(2))
    shifted = [agreement(np.array(s, float)) for s in ((4, 0), (-4, 0), (0, 4), (0, -4), (8, 8))]
    assert at_zero > 0.3, at_zero
    assert at_zero > 1.4 * max(shifted), (at_zero, shifted)


def test_in_memory_layer_with_its_own_scale_and_offset(make_napari_viewer, tiny_model, plugin_dirs, qtbot,
                                                       tmp_path, monkeypatch):
    """A layer that is not from a file (runs in a worker thread) with scale 0.5 and a translate: outputs
    land on it, pixel for pixel."""
    monkeypatch.setenv("NAPARI_MUVIT_SETTINGS_DIR", str(tmp_path / "settings"))
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    image = viewer.add_image(rng.random((160, 192)).astype(np.float32), name="memory", scale=(0.5, 0.5),
                             translate=(10.0, -4.0))
    w = make_widget(viewer, tiny_model)
    w.region_mode.setCurrentText("whole slide")
    assert w.image.source is None and w.image.pixel_size == (0.5, 0.5)
    assert w.image.origin_offset == (20.0, -8.0)  # translate in world px
    job = w.run()
    assert type(job).__name__ == "EngineJob"  # in-memory pixels stay in this process
    wait_for_run(qtbot, w)
    assert job.error is None
    labels = viewer.layers["MuViT labels"]
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    for pixel in [(0, 0), (159, 191), (77, 100)]:
        np.testing.assert_allclose(labels.data_to_world(pixel), image.data_to_world(pixel))
    assert np.count_nonzero(np.asarray(labels.data)) == 160 * 192
    # a second run keeps the first one's results beside its own, named after the first run's store
    first_store, first_labels = w.last_store, np.asarray(labels.data).copy()
    second = w.run()
    wait_for_run(qtbot, w)
    assert second.error is None and w.last_store != first_store
    kept = viewer.layers[f"MuViT labels [{first_store.stem}]"]
    assert kept is labels and np.array_equal(np.asarray(kept.data), first_labels)
    assert viewer.layers["MuViT labels"].metadata["muvit"]["store"] == str(w.last_store)
    assert f"MuViT ROIs [{first_store.stem}]" in viewer.layers and "MuViT ROIs" in viewer.layers


def test_reference_encoder_folder_gives_a_pca_overview(sample_viewer, plugin_dirs, qtbot):
    """A reference-format encoder folder (no muvit.yaml): the run shows token features as one RGB layer at
    patch resolution, placed on the region."""
    from napari_muvit.model import MuViTEncoder, save_model

    torch.manual_seed(0)
    folder = plugin_dirs / "encoder"
    if not folder.exists():
        save_model(MuViTEncoder(in_channels=1, levels=(1, 4), patch_size=8, num_layers=1, dim=32, heads=1), folder)
    (folder / "muvit.yaml").unlink(missing_ok=True)  # reference folders have config.yaml + model.pth only
    w = make_widget(sample_viewer, str(folder), region=(128, 256, 64, 192))
    assert w.model.info.task == "encoder" and w.levels.chosen() == (1, 4)
    assert w.run() is not None
    wait_for_run(qtbot, w)
    assert w.job.error is None
    layer = sample_viewer.layers["MuViT features (PCA)"]
    assert layer.rgb and np.asarray(layer.data).shape == (16, 16, 3)  # 128 px / patch 8
    np.testing.assert_allclose(layer.scale, (8, 8))
    np.testing.assert_allclose(layer.translate, (128 + 3.5, 64 + 3.5))
    assert not [ly.name for ly in sample_viewer.layers if ly.name.startswith("MuViT p(")]


def test_output_choices_reach_the_store_and_the_layers(sample_viewer, tiny_model, qtbot):
    """The Output box: probabilities as 16-bit floats at x4 output resolution, then labels only."""
    from napari_muvit.engine.store import OutputStore

    w = make_widget(sample_viewer, tiny_model, (64, 320, 64, 320))
    assert w.output_level.isEnabled() and w.prob_dtype.isEnabled()  # a segmentation model
    w.prob_dtype.setCurrentText("16-bit float")
    w.output_level.setCurrentText("x4")
    assert w.run() is not None
    wait_for_run(qtbot, w)
    assert w.job.error is None and "done" in w.status.text()
    store = OutputStore.open(w.last_store)
    assert store.prob_dtype == "float16" and store.layout["level"] == 4
    labels = sample_viewer.layers["MuViT labels"]
    # one output pixel per 4 x 4 slide pixels, its centre on theirs: scale 4, translate (4 - 1) / 2
    np.testing.assert_allclose(labels.scale, (4, 4))
    np.testing.assert_allclose(labels.translate, (1.5, 1.5))
    probs = sample_viewer.layers["MuViT p(class 1)"]
    np.testing.assert_allclose(probs.scale, (4, 4))
    assert np.asarray(probs.data[0] if probs.multiscale else probs.data).dtype == np.float16
    # settings remember the choice; labels only: no probability layer from that run
    assert w.settings()["prob_dtype"] == "float16" and w.settings()["output_level"] == 4
    w.prob_dtype.setCurrentText("none (labels only)")
    w.output_level.setCurrentText("x1")
    assert w.run() is not None
    wait_for_run(qtbot, w)
    assert w.job.error is None
    assert OutputStore.open(w.last_store).prob_dtype == "none"
    assert "MuViT labels" in [layer.name for layer in sample_viewer.layers]
    names = [layer.name for layer in sample_viewer.layers]
    assert "MuViT p(class 1)" not in names, names  # the x4 run's layers were kept under their store's name
    assert any(n.startswith("MuViT p(class 1)") for n in names), names


def test_measurements_of_the_last_run_table_chart_and_export(sample_viewer, tiny_model, qtbot, tmp_path):
    """The Measurements box shows what `measure_store` computes, per region; the export is its CSV."""
    from napari_muvit.engine.measure import measure_store, write_csv

    w = make_widget(sample_viewer, tiny_model, (64, 320, 64, 320))
    panel = w.measure_panel
    assert not panel.measure_button.isEnabled()  # nothing to measure before a run
    assert w.run() is not None
    wait_for_run(qtbot, w)
    assert panel.measure_button.isEnabled() and panel.store == w.last_store
    # measure the whole prediction and the rectangle of the region's own Shapes layer
    assert panel.regions.findText("roi box") >= 0
    panel.regions.setCurrentText("roi box")
    job = panel.measure()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running and panel.result is not None, timeout=60_000)
    from napari_muvit.widgets.annotation_layers import regions_from_shapes

    expected = measure_store(w.last_store, regions_from_shapes(sample_viewer.layers["roi box"]))
    shown = {(panel.table.item(r, 0).text(), panel.table.item(r, 1).text()): panel.table.item(r, 2).value
             for r in range(panel.table.rowCount())}
    want = {(r["region"], r["class"]): float(r["area_px2"]) for r in expected.rows if r["class"] != "(not predicted)"}
    assert shown == want and len({region for region, _ in shown}) == 2
    # the whole-prediction areas of the classes add up to the predicted (tissue + background) area
    slide = expected.rows[0]["region"]
    classes = [r for r in expected.rows if r["region"] == slide and r["class"] not in ("(tissue)", "(not predicted)")]
    assert sum(r["pixels"] for r in classes) == 256 * 256  # the predicted region, every pixel one class
    # the chart: the tissue classes (not background) of the whole prediction, with their areas
    assert panel.bars == [(r["class"], r["area_px2"]) for r in classes if r["percent_of_tissue"] is not None]
    assert len(panel.bars) == 3  # no class of this model is named background: all three are tissue
    # sorting by area puts the largest first
    panel.table.sortItems(2, Qt.DescendingOrder)
    values = [panel.table.item(r, 2).value for r in range(panel.table.rowCount())]
    assert values == sorted(values, reverse=True)
    out = panel.export(str(tmp_path / "m.csv"))
    assert out.read_text() == write_csv(expected, tmp_path / "direct.csv").read_text()


def test_show_tissue_draws_the_mask_foreground_runs_use(sample_viewer, tiny_model, qtbot):
    from napari_muvit.data.foreground import foreground_mask
    from napari_muvit.widgets.layers import level_transform

    w = make_widget(sample_viewer, tiny_model)
    job = w.show_tissue()
    assert job is not None
    qtbot.waitUntil(lambda: "MuViT tissue" in sample_viewer.layers, timeout=30_000)
    layer = sample_viewer.layers["MuViT tissue"]
    mask, level = foreground_mask(w.image.pyramid)
    np.testing.assert_array_equal(np.asarray(layer.data), mask.astype(np.uint8))
    scale, translate = level_transform(level, w.image.pixel_size, origin=w.image.origin_offset)
    np.testing.assert_allclose(layer.scale, scale)
    np.testing.assert_allclose(layer.translate, translate)
    assert level > 1 and 0 < mask.mean() < 1  # a coarse level, and the sample slide is partly tissue
    assert w.status.text().startswith(f"tissue: {100 * mask.mean():.1f} % of the slide")


def test_layer_steps_run_one_per_event_loop_turn(qtbot):
    from qtpy.QtWidgets import QApplication

    from napari_muvit.widgets.layer_steps import LayerSteps

    steps = LayerSteps()
    ran, drained = [], []
    steps.drained.connect(lambda: drained.append(len(ran)))
    steps.queue([lambda k=k: ran.append(k) for k in range(3)])
    assert ran == [] and steps.pending == 3  # nothing runs before the event loop turns
    QApplication.processEvents()
    assert ran == [0] and steps.pending == 2 and drained == []  # one turn of the event loop: one step
    qtbot.waitUntil(lambda: drained == [3], timeout=2000)
    assert ran == [0, 1, 2] and steps.pending == 0
    steps.queue([lambda: ran.append("now")], stepwise=False)  # all at once, no drained signal needed
    assert ran[-1] == "now" and steps.pending == 0


_FRESH_GUI_RUN = r"""
import os, sys, time
from qtpy.QtWidgets import QApplication
import napari
from napari_muvit.widgets._reader import read_slide
from napari_muvit.widgets._sample import sample_slide_path
from napari_muvit.widgets.predict.dock import PredictWidget

viewer = napari.Viewer(show=False)
for data, kwargs, kind in read_slide(str(sample_slide_path(size=int(sys.argv[2]), seed=int(sys.argv[3])))):
    getattr(viewer, f"add_{kind}")(data, **kwargs)
w = PredictWidget(viewer)
w.model.source.setCurrentText("folder")
w.model.folder.setText(sys.argv[1])
w._on_model_changed()
w.region_mode.setCurrentText("whole slide")
job = w.run()
app = QApplication.instance()
deadline = time.monotonic() + 240
while (job.running or not w.run_button.isEnabled() or w.steps.pending) and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.01)
kinds = sorted(type(ly).__name__ for ly in viewer.layers)
print("RESULT", job.error, job.done, kinds, "torch" in sys.modules, flush=True)
"""


def test_a_run_from_the_dock_never_imports_torch_in_the_gui_process(tiny_model, plugin_dirs):
    """A fresh napari session predicts a whole slide from the dock: the recipe check at the Run click, the job
    and the result layers leave torch unimported in the GUI process (importing it there held the viewer ~2 s)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", NAPARI_MUVIT_THREADS="1",
               NAPARI_MUVIT_SETTINGS_DIR=str(plugin_dirs / "fresh-settings"))
    done = subprocess.run([sys.executable, "-c", _FRESH_GUI_RUN, tiny_model, str(SLIDE_SIZE), str(SLIDE_SEED)],
                          env=env, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, f"exit code {done.returncode}: {done.stderr[-3000:]}"
    error, n_done, *rest = line.split(" ", 3)[1:]
    assert error == "None" and int(n_done) > 0, line
    assert "Labels" in rest[0] and "Image" in rest[0], line
    assert line.endswith(" False"), line


@pytest.mark.parametrize("live", [True, False])
def test_results_too_big_to_swap_get_no_placeholder_heatmaps(sample_viewer, tiny_model, qtbot, monkeypatch, live):
    """Results over `MATERIALIZE_MAX_PX` output pixels arrive as a pyramid, which napari cannot swap into a layer
    made for one array: the Run click then adds only the labels placeholder (for the live results, none without
    them), and the result layers are built once, multiscale, when the run ends."""
    from napari_muvit.widgets import prediction_job

    monkeypatch.setattr(prediction_job, "MATERIALIZE_MAX_PX", 128 * 128)  # the 512 px slide's outputs are bigger
    w = make_widget(sample_viewer, tiny_model, (64, 192, 64, 192))
    w.live.setChecked(live)
    added = []
    sample_viewer.layers.events.inserted.connect(lambda e: added.append(e.value.name))
    assert w.run() is not None
    wait_for_run(qtbot, w)
    assert w.job.error is None
    probs, labels = sample_viewer.layers["MuViT p(class 1)"], sample_viewer.layers["MuViT labels"]
    assert probs.multiscale and labels.multiscale
    # the labels placeholder first (live only), then each result layer once
    assert added[0] == "MuViT labels" if live else added[0] != "MuViT labels", added
    assert added.count("MuViT p(class 1)") == 1 and added.count("MuViT labels") == 1 + live, added


def test_results_small_enough_to_swap_fill_the_placeholders_in_place(sample_viewer, tiny_model, qtbot):
    """Small results (the default threshold, a 512 px slide) fill the layers made at the Run click: no layer is
    built twice."""
    w = make_widget(sample_viewer, tiny_model, (64, 192, 64, 192))
    added = []
    sample_viewer.layers.events.inserted.connect(lambda e: added.append(e.value.name))
    assert w.run() is not None
    wait_for_run(qtbot, w)
    assert w.job.error is None and not sample_viewer.layers["MuViT labels"].multiscale
    placeholders = ["MuViT labels", "MuViT p(class 0)", "MuViT p(class 1)", "MuViT p(class 2)"]
    assert sorted(added[:4]) == placeholders, added  # added first, at the click
    assert sorted(n for n in added if n != "MuViT ROIs") == placeholders, added  # the results swapped into them


_FRESH_DOCK_ON_ARRAY = r"""
import sys, threading, time
import numpy as np
from qtpy.QtWidgets import QApplication
import napari

importers = {}

def hook(event, args):
    if event == "import" and args[0] in ("dask.array", "zarr") and args[0] not in importers:
        importers[args[0]] = threading.current_thread().name

sys.addaudithook(hook)
viewer = napari.Viewer(show=False)
viewer.add_image(np.random.default_rng(0).integers(0, 255, (300, 200), dtype=np.uint8), name="plain")
from napari_muvit.widgets.predict.dock import PredictWidget

assert "dask.array" not in sys.modules, "imported before the dock"
w = PredictWidget(viewer)
first = w.image_info.text()
try:
    w.build_recipe()
    early = "no error"
except ValueError as exc:
    early = str(exc)
app = QApplication.instance()
deadline = time.monotonic() + 60
while w.image is None and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.01)
print("RESULT", repr(first), repr(early), repr(w.image_info.text()), importers, flush=True)
"""


def test_opening_the_dock_on_an_in_memory_image_imports_the_readers_off_the_gui_thread(plugin_dirs):
    """A fresh session whose image came from napari's own reader or the console: the dock reads it as a pyramid,
    which needs dask.array (~1 s of importing with zarr). It is imported in a thread, the dock says it is
    reading meanwhile (Run says so too), then shows the image; the GUI thread never imports them."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", NAPARI_MUVIT_SETTINGS_DIR=str(plugin_dirs / "fresh-settings-array"))
    done = subprocess.run([sys.executable, "-c", _FRESH_DOCK_ON_ARRAY], env=env, capture_output=True, text=True,
                          timeout=300)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, f"exit code {done.returncode}: {done.stderr[-3000:]}"
    assert "'Reading the image…'" in line and "'the image is still being read; Run again in a moment.'" in line, line
    assert "'300 x 200 px" in line, line  # then the image is read
    assert "'dask.array': 'import napari_muvit.data.readers'" in line, line
    assert "'zarr': 'MainThread'" not in line, line


def test_a_background_import_that_fails_calls_back_once_and_is_not_retried(qtbot):
    """The callback comes once the thread has finished even when the import failed; asking again then answers
    at once (the caller's own import raises the error), instead of starting another thread every time."""
    from qtpy.QtWidgets import QWidget

    from napari_muvit.widgets import background_import as B

    owner = QWidget()
    qtbot.addWidget(owner)
    calls = []
    assert B.when_imported("napari_muvit_no_such_module", lambda: calls.append(1), owner) is False
    qtbot.waitUntil(lambda: calls == [1], timeout=5000)
    thread = B._threads["napari_muvit_no_such_module"]
    assert B.when_imported("napari_muvit_no_such_module", lambda: calls.append(2), owner) is True
    assert B._threads["napari_muvit_no_such_module"] is thread and calls == [1]
    assert B.when_imported("json", lambda: calls.append(3), owner) is True  # imported long ago: no thread
    assert "json" not in B._threads and calls == [1]
