"""Attention probe widget: world placement of the maps, layer replacement, click wiring, share plot."""

from __future__ import annotations

import numpy as np
import pytest

from napari_muvit.widgets.attention.overlay import (
    CROPS_LAYER,
    MAP_PREFIX,
    QUERY_LAYER,
    AttentionOverlay,
    ProbeView,
    token_grid_placement,
)
from napari_muvit.widgets.layers import bbox_edges


def _crop_bbox(first_yx, level, size):
    first = np.asarray(first_yx, dtype=float)
    return np.stack([first, first + (size - 1) * level])


@pytest.mark.parametrize("level,size,grid", [(1, 64, 8), (4, 64, 8), (16, 128, 8), (8, 96, 12)])
def test_token_grid_covers_the_crop_pixels(level, size, grid):
    bbox = _crop_bbox((1000 + level * 3, 500 - level), level, size)
    cell, centre0 = token_grid_placement(bbox, level, (grid, grid))
    # each cell = level * patch world px
    np.testing.assert_allclose(cell, level * size / grid)
    # the map's outer edges are the crop's outer pixel edges (napari: pixel centre +- scale/2)
    y0, x0, y1, x1 = bbox_edges(bbox, level)
    np.testing.assert_allclose(centre0 - cell / 2, [y0, x0])
    np.testing.assert_allclose(centre0 + (grid - 1) * cell + cell / 2, [y1, x1])
    # a token's centre is the centre of the level-1 pixels it was computed from
    first_patch_centres = bbox[0] + np.arange(size // grid)[:, None] * level  # level-f pixel centres
    np.testing.assert_allclose(centre0, first_patch_centres.mean(0))


def _view(levels, seed, query=(130.0, 140.0), patch=8):
    rng = np.random.default_rng(seed)
    maps = [rng.random((8, 8)) for _ in levels]
    bboxes = [_crop_bbox((128 - 32 * lv + 1 - lv, 128 - 32 * lv), lv, 64) for lv in levels]
    return ProbeView(tuple(levels), maps, bboxes, np.asarray(query), levels[0], patch)


def test_overlay_replaces_layers_and_places_them(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((512, 512), np.float32), name="slide")
    overlay = AttentionOverlay(viewer)
    pixel_size = (0.5, 0.5)
    for seed in range(3):
        view = _view((1, 4, 16), seed, query=(100.0 + seed, 90.0))
        overlay.show(view, pixel_size)
        names = [layer.name for layer in viewer.layers]
        assert names.count(f"{MAP_PREFIX}4") == 1 and len(names) == 1 + 3 + 2  # slide, 3 maps, crops, query
        for level, data, bbox in zip(view.levels, view.maps, view.bboxes):
            layer = viewer.layers[f"{MAP_PREFIX}{level}"]
            np.testing.assert_array_equal(layer.data, data.astype(np.float32))
            cell, centre0 = token_grid_placement(bbox, level, data.shape)
            np.testing.assert_allclose(layer.scale, cell * 0.5)
            np.testing.assert_allclose(layer.translate, centre0 * 0.5)
            # napari world extent of the map = the crop's outer edges (times the pixel size)
            extent = np.asarray(layer.extent.world)
            y0, x0, y1, x1 = bbox_edges(bbox, level)
            np.testing.assert_allclose(extent[0] - layer.scale / 2, np.array([y0, x0]) * 0.5)
            np.testing.assert_allclose(extent[1] + layer.scale / 2, np.array([y1, x1]) * 0.5)
        np.testing.assert_allclose(viewer.layers[QUERY_LAYER].data, [[100.0 + seed, 90.0]])
        np.testing.assert_allclose(viewer.layers[QUERY_LAYER].scale, pixel_size)
        rects = viewer.layers[CROPS_LAYER].data
        assert len(rects) == 3
        np.testing.assert_allclose(rects[2].min(0), bbox_edges(view.bboxes[2], 16)[:2])
    # fewer levels: the map of the dropped level goes away, nothing piles up
    overlay.show(_view((1, 4), 5), pixel_size)
    names = [layer.name for layer in viewer.layers]
    assert f"{MAP_PREFIX}16" not in names and len(names) == 1 + 2 + 2
    assert len(viewer.layers[CROPS_LAYER].data) == 2
    overlay.clear()
    assert [layer.name for layer in viewer.layers] == ["slide"]


def _pixel_is(widget, point, color: str) -> bool:
    """The painted colour at ``point`` is ``color`` (within 4 levels a channel: the display's colour depth)."""
    from qtpy.QtGui import QColor

    got, want = widget.grab().toImage().pixelColor(int(point.x()), int(point.y())), QColor(color)
    return all(abs(a - b) <= 4 for a, b in zip(got.getRgb()[:3], want.getRgb()[:3]))


def test_level_share_plot_draws_the_given_shares(qtbot):
    from napari_muvit.widgets.plots import _COLORS, LevelSharePlot

    plot = LevelSharePlot()
    qtbot.addWidget(plot)
    plot.resize(320, 190)
    plot.set_shares((1, 4, 16), [0.5, 0.3, 0.2], [0.2, 0.3, 0.5])
    plot.grab()  # paints now
    area, bars = plot.drawn["area"], plot.drawn["bars"]
    heights = [bar.height() / area.height() for _, _, bar in bars]
    np.testing.assert_allclose(heights, [0.5, 0.3, 0.2, 0.2, 0.3, 0.5], atol=1e-6)
    assert [(key, level) for key, level, _ in bars] == [("query", 1), ("query", 4), ("query", 16),
                                                       ("tile", 1), ("tile", 4), ("tile", 16)]
    assert _pixel_is(plot, bars[0][2].center(), _COLORS[0]) and _pixel_is(plot, bars[3][2].center(), _COLORS[1])
    with pytest.raises(ValueError, match="3 levels"):
        plot.set_shares((1, 4, 16), [1.0, 0.0])


def test_curve_plot_paints_on_the_gui_thread_and_coalesces(qtbot):
    import threading

    from napari_muvit.widgets.plots import CurvePlot

    threads_before = threading.active_count()
    plot = CurvePlot(redraw_ms=50, right_axis=("mDSC",))
    qtbot.addWidget(plot)
    plot.resize(320, 190)
    plot.show()
    qtbot.waitExposed(plot)
    qtbot.wait(100)  # the paints of being shown
    assert plot.message == "no training yet"
    before = plot.paints
    for step in range(200):
        plot.append("loss", step, 1.0 / (step + 1))
        plot.append("mDSC", step, step / 200)
    plot.append("loss", 999, float("nan"))  # non-finite values are dropped
    qtbot.waitUntil(lambda: plot.paints > before, timeout=5000)
    qtbot.wait(150)
    assert plot.paints - before == 1  # 400 points: one repaint
    assert threading.active_count() == threads_before  # no render thread
    xs, ys = plot.series["loss"]
    assert len(xs) == 200 and ys[-1] == pytest.approx(1 / 200)
    assert plot.message == "" and plot.drawn["series"] == {"loss": ("left", 200), "mDSC": ("right", 200)}
    lo, hi = plot.drawn["left_range"]
    assert lo < 1 / 200 and hi > 1.0  # the loss axis covers every loss value


def _items(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def _mouse(viewer, kind, position, pos=(0, 0), modifiers=()):
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    event = read_only_mouse_event(type=f"mouse_{kind}", position=position, pos=np.asarray(pos, float),
                                  button=1, modifiers=list(modifiers),
                                  is_dragging=kind == "move" and bool(viewer._mouse_drag_gen))
    {"press": mouse_press_callbacks, "move": mouse_move_callbacks,
     "release": mouse_release_callbacks}[kind](viewer, event)


def test_click_probes_drag_pans_shift_hover_follows(make_napari_viewer, monkeypatch):
    from napari_muvit.widgets.attention.dock import AttentionProbeWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((256, 256), np.float32), name="slide", scale=(0.5, 0.5))
    widget = AttentionProbeWidget(viewer)
    assert widget._image.value is viewer.layers["slide"]
    probed = []
    monkeypatch.setattr(AttentionProbeWidget, "probe", lambda self, yx: probed.append(tuple(yx)))
    # a click: press and release at the same screen point -> one probe at the world (level-1 px) point
    _mouse(viewer, "press", (50.0, 60.0), pos=(10, 10))
    _mouse(viewer, "release", (50.0, 60.0), pos=(10, 10))
    assert probed == [(100.0, 120.0)]
    # a drag (pan) probes nothing
    _mouse(viewer, "press", (50.0, 60.0), pos=(10, 10))
    _mouse(viewer, "move", (55.0, 60.0), pos=(30, 10))
    _mouse(viewer, "release", (55.0, 60.0), pos=(30, 10))
    assert len(probed) == 1
    # hover follows the cursor only with the option on and Shift held
    _mouse(viewer, "move", (20.0, 20.0))
    widget._hover.setChecked(True)
    _mouse(viewer, "move", (20.0, 20.0))
    _mouse(viewer, "move", (21.0, 20.0), modifiers=("Shift",))
    assert probed[1:] == [(42.0, 40.0)]
    # a click while painting in a Labels layer paints, it does not probe
    scribbles = viewer.add_labels(np.zeros((256, 256), np.uint8), scale=(0.5, 0.5))
    scribbles.mode = "paint"
    _mouse(viewer, "press", (50.0, 60.0))
    _mouse(viewer, "release", (50.0, 60.0))
    assert len(probed) == 2
    viewer.layers.selection.active = viewer.layers["slide"]
    # probe mode off: clicks do nothing
    widget._on_click.setChecked(False)
    _mouse(viewer, "press", (50.0, 60.0))
    _mouse(viewer, "release", (50.0, 60.0))
    assert len(probed) == 2


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    from napari_muvit.data.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("probe") / "slide.ome.zarr"
    write_synthetic_slide(path, size=512, seed=0)
    return path


def _wait_probe(qtbot, widget):
    qtbot.waitUntil(lambda: widget._job is not None and not widget._job.running and widget._pending is None
                    and not widget.steps.pending, timeout=60_000)
    qtbot.wait(30)


def test_click_shows_the_engine_probe_per_level_on_world_boxes(make_napari_viewer, slide_path, qtbot):
    import torch

    from napari_muvit.engine.attention import attention_probe, open_session
    from napari_muvit.widgets._reader import read_slide
    from napari_muvit.widgets.attention.dock import AttentionProbeWidget

    torch.set_num_threads(1)
    viewer = make_napari_viewer()
    data, kwargs, _ = read_slide(str(slide_path))[0]
    viewer.add_image(data, **kwargs)
    widget = AttentionProbeWidget(viewer)
    point = (200.0, 300.0)
    _mouse(viewer, "press", point, pos=(5, 5))
    _mouse(viewer, "release", point, pos=(5, 5))
    _wait_probe(qtbot, widget)
    reference = open_session(str(slide_path), "demo")
    expected = attention_probe(reference, point)
    levels = (1, 4, 16)
    maps = [layer for layer in viewer.layers if layer.name.startswith(MAP_PREFIX)]
    assert sorted(int(layer.name[len(MAP_PREFIX):]) for layer in maps) == list(levels)
    for level, (values, bbox) in zip(levels, expected.maps):
        layer = viewer.layers[f"{MAP_PREFIX}{level}"]
        np.testing.assert_allclose(layer.data, values, rtol=1e-5, atol=1e-7)
        # each cell is level * patch world px and the map covers exactly the level's crop
        np.testing.assert_allclose(layer.scale, [level * 8] * 2)
        extent = np.asarray(layer.extent.world)
        y0, x0, y1, x1 = bbox_edges(bbox, level)
        np.testing.assert_allclose(extent[0] - layer.scale / 2, [y0, x0])
        np.testing.assert_allclose(extent[1] + layer.scale / 2, [y1, x1])
        assert x1 - x0 == 64 * level
    np.testing.assert_allclose(viewer.layers[QUERY_LAYER].data[0], expected.query_world_yx)
    np.testing.assert_allclose(widget.plot.shares["query"], expected.level_share)
    assert widget.plot.shares["tile"].sum() == pytest.approx(1.0)
    # a second click in the same tile reuses the cached encoder pass and replaces the maps
    n_layers = len(viewer.layers)
    widget.probe((210.0, 310.0))
    _wait_probe(qtbot, widget)
    assert widget.last_info["forward_calls"] == 1 and len(viewer.layers) == n_layers
    np.testing.assert_allclose(viewer.layers[f"{MAP_PREFIX}4"].data,
                               attention_probe(reference, (210.0, 310.0)).maps[1][0], rtol=1e-5, atol=1e-7)
    # the controls re-probe the same point: head 2 of layer 0, query token from level 4
    assert _items(widget._head)[-1] == "3" and "rollout" in _items(widget._layer)
    widget._head.setCurrentText("2")
    _wait_probe(qtbot, widget)
    widget._layer.setCurrentText("0")
    _wait_probe(qtbot, widget)
    widget._query_level.setCurrentText("4")
    _wait_probe(qtbot, widget)
    other = attention_probe(reference, (210.0, 310.0), layer=0, head=2, query_level=4)
    for level, (values, _) in zip(levels, other.maps):
        np.testing.assert_allclose(viewer.layers[f"{MAP_PREFIX}{level}"].data, values, rtol=1e-5, atol=1e-7)
    assert viewer.layers[QUERY_LAYER].size[0] == pytest.approx(4 * 8)


def test_feature_view_shows_encoder_pca_rgb_on_the_view(make_napari_viewer, slide_path, qtbot):
    from napari_muvit.widgets._reader import read_slide
    from napari_muvit.widgets.attention.dock import AttentionProbeWidget

    viewer = make_napari_viewer()
    data, kwargs, _ = read_slide(str(slide_path))[0]
    viewer.add_image(data, **kwargs)
    widget = AttentionProbeWidget(viewer)
    viewer.camera.center = (192.0, 256.0)
    viewer.camera.zoom = max(viewer.canvas.size) / 128  # about 128 px of the slide in view
    job = widget.feature_view()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    qtbot.wait(50)
    assert job.error is None, job.error
    layer = viewer.layers["MuViT features (PCA RGB)"]
    assert layer.rgb and layer.data.shape[-1] == 3
    rgb = np.asarray(layer.data)
    assert 0 <= rgb.min() and rgb.max() <= 1 and rgb.std() > 0.05  # three PCA components, not a flat image
    np.testing.assert_allclose(layer.scale, [8, 8])  # one pixel per level-1 token (patch 8)
    import zarr

    meta = zarr.open_group(layer.metadata["muvit"]["store"], mode="r").attrs["napari_muvit"]
    y0, y1, x0, x1 = meta["region"]
    assert y0 <= 192 < y1 and x0 <= 256 < x1 and (y1 - y0) <= 256
    np.testing.assert_allclose(layer.translate, [y0 + 3.5, x0 + 3.5])  # token centre of the region's corner


def _dock_on_slide(make_napari_viewer, slide_path):
    """A viewer showing the slide file and an attention dock on it."""
    from napari_muvit.widgets._reader import read_slide
    from napari_muvit.widgets.attention.dock import AttentionProbeWidget

    viewer = make_napari_viewer()
    data, kwargs, _ = read_slide(str(slide_path))[0]
    viewer.add_image(data, **kwargs)
    return viewer, AttentionProbeWidget(viewer)


def test_a_subset_of_levels_probes_only_those(make_napari_viewer, slide_path, qtbot):
    from napari_muvit.engine.attention import attention_probe, open_session

    viewer, widget = _dock_on_slide(make_napari_viewer, slide_path)
    widget.probe((100.0, 100.0))
    _wait_probe(qtbot, widget)
    assert f"{MAP_PREFIX}1" in viewer.layers
    widget._levels.value = "4,16"
    widget.probe((100.0, 100.0))  # the query level picker still says 1: the finest chosen level is used
    _wait_probe(qtbot, widget)
    names = sorted(layer.name for layer in viewer.layers if layer.name.startswith(MAP_PREFIX))
    assert names == [f"{MAP_PREFIX}16", f"{MAP_PREFIX}4"] and _items(widget._query_level) == ["4", "16"]
    expected = attention_probe(open_session(str(slide_path), "demo", "4,16"), (100.0, 100.0), query_level=4)
    np.testing.assert_allclose(viewer.layers[f"{MAP_PREFIX}16"].data, expected.maps[1][0], rtol=1e-5, atol=1e-7)
    assert len(viewer.layers[CROPS_LAYER].data) == 2


def test_both_widgets_open_from_the_plugin_menu(make_napari_viewer):
    from napari_muvit.widgets.attention.dock import AttentionProbeWidget
    from napari_muvit.widgets.teach.dock import TeachWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="slide")
    _, probe = viewer.window.add_plugin_dock_widget("napari-muvit", "MuViT attention probe")
    _, teach = viewer.window.add_plugin_dock_widget("napari-muvit", "MuViT teach")
    assert isinstance(probe, AttentionProbeWidget) and probe._image.value is viewer.layers["slide"]
    assert isinstance(teach, TeachWidget) and teach.scribble.image.value is viewer.layers["slide"]


def test_adding_a_layer_keeps_the_probe_choices_and_does_not_reprobe(make_napari_viewer, monkeypatch):
    """napari resets a docked widget's choices whenever a layer is added: the layer/head/query-level
    picks set from the model stay, and nothing is probed again behind the user's back."""
    from napari_muvit.widgets.attention.dock import AttentionProbeWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((256, 256), np.float32), name="slide")
    widget = AttentionProbeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="attention")
    probed = []
    monkeypatch.setattr(AttentionProbeWidget, "probe", lambda self, yx: probed.append(tuple(yx)))
    widget._update_choices((1, 4, 16), {"num_layers": 2, "heads": 4})  # as after a first probe
    widget._last_point = (100.0, 120.0)
    for combo, text in ((widget._layer, "1"), (widget._head, "3"), (widget._query_level, "4")):
        combo.setCurrentText(text)
    assert len(probed) == 3  # each change re-probes the last point once
    viewer.add_image(np.ones((64, 64), np.float32), name="another")
    viewer.add_points(np.array([[5.0, 5.0]]), name="pts")
    viewer.layers.remove("pts")
    assert [c.currentText() for c in (widget._layer, widget._head, widget._query_level)] == ["1", "3", "4"]
    assert _items(widget._layer) == ["last", "rollout", "0", "1"]
    assert _items(widget._head) == ["mean", "0", "1", "2", "3"]
    assert _items(widget._query_level) == ["1", "4", "16"]
    assert len(probed) == 3
    assert widget._image.value is viewer.layers["slide"]  # the image picker itself keeps its choice
    assert widget._image.choices == [viewer.layers["slide"], viewer.layers["another"]]


_FRESH_GUI_PROBE = r"""
import os, sys, time
from qtpy.QtWidgets import QApplication
import napari
from napari_muvit.widgets._reader import read_slide
from napari_muvit.widgets.attention.dock import AttentionProbeWidget

viewer = napari.Viewer(show=False)
data, kwargs, _ = read_slide(sys.argv[1])[0]
viewer.add_image(data, **kwargs)
widget = AttentionProbeWidget(viewer)
app = QApplication.instance()
pids = []
for point in ((200.0, 300.0), (210.0, 310.0)):
    widget.probe(point)
    deadline = time.monotonic() + 240
    while (widget._job is None or widget._job.running or widget.steps.pending) and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    pids.append(widget._job.worker_pid)
maps = sorted(ly.name for ly in viewer.layers if ly.name.startswith("attention level "))
print("RESULT", widget._job.error, len(maps), widget.last_info["forward_calls"],
      pids[0] == pids[1] != os.getpid(), "torch" in sys.modules, flush=True)
"""


def test_probing_a_slide_file_never_imports_torch_in_the_gui_process(slide_path, tmp_path):
    """A fresh napari session probes a slide read from a file twice: both clicks run in the probe's own worker
    process (the second reuses its cached encoder pass) and the GUI process ends without torch imported
    (importing it there held the viewer about 1.6 s at the first click)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", NAPARI_MUVIT_THREADS="1",
               NAPARI_MUVIT_SETTINGS_DIR=str(tmp_path / "settings"))
    done = subprocess.run([sys.executable, "-c", _FRESH_GUI_PROBE, str(slide_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, f"exit code {done.returncode}: {done.stderr[-3000:]}"
    assert line == "RESULT None 3 1 True False", line


def test_an_in_memory_image_is_probed_in_a_thread(make_napari_viewer, qtbot):
    """An image layer without a file cannot go to the worker process: its probe runs in a thread, same maps."""
    from napari_muvit.widgets.attention.dock import AttentionProbeWidget
    from napari_muvit.widgets.engine_process import ProcessJob

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((256, 256)).astype(np.float32), name="in memory")
    widget = AttentionProbeWidget(viewer)
    widget.probe((128.0, 128.0))
    _wait_probe(qtbot, widget)
    assert not isinstance(widget._job, ProcessJob) and widget._job.error is None
    assert sorted(ly.name for ly in viewer.layers if ly.name.startswith(MAP_PREFIX)) == [
        f"{MAP_PREFIX}1", f"{MAP_PREFIX}16", f"{MAP_PREFIX}4"]


def test_the_status_says_when_a_probe_loads_the_model(make_napari_viewer, slide_path, qtbot):
    """The first probe of an image and model says it loads the model (seconds); later ones just probe."""
    _, widget = _dock_on_slide(make_napari_viewer, slide_path)
    widget.probe((100.0, 100.0))
    assert "loads the model" in widget._status.text()
    _wait_probe(qtbot, widget)
    widget.probe((120.0, 100.0))
    assert widget._status.text() == "Probing..."
    _wait_probe(qtbot, widget)


def test_empty_plots_are_text(qtbot):
    """An empty chart shows a line of text; emptied again, it shows the text again."""
    from napari_muvit.widgets.plots import _COLORS, BarPlot, CurvePlot, LevelSharePlot

    plots = [BarPlot(empty="press Measure"), CurvePlot(), LevelSharePlot()]
    for plot in plots:
        qtbot.addWidget(plot)
        plot.grab()
    assert [p.message for p in plots] == ["press Measure", "no training yet",
                                          "attention share per level: click the image"]
    assert all(p.drawn == {} for p in plots)
    bars = plots[0]
    bars.resize(300, 150)
    bars.set_bars(["tumour", "stroma"], [1.0, 2.0], "area (px²)")
    bars.grab()
    (n1, v1, r1), (n2, v2, r2) = bars.drawn["bars"]
    assert (n1, n2) == ("tumour", "stroma") and r2.width() == pytest.approx(bars.drawn["area"].width())
    assert r1.width() == pytest.approx(r2.width() / 2) and r1.top() < r2.top()  # in order, top to bottom
    assert _pixel_is(bars, r2.center(), _COLORS[0])
    bars.set_bars([], [], "area")
    bars.grab()
    assert bars.message == "press Measure" and bars.drawn == {}
