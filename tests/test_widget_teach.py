"""Teach widget: scribble probe on the synthetic slide, debounced retraining, live plot, cancel, heartbeat.

Training jobs run in the engine worker process: their results carry that process's ``pid``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_muvit.widgets.teach.dock import TeachWidget
from napari_muvit.widgets.teach.probe import PROBE_LAYER
from napari_muvit.widgets.workers import EngineJob

SLIDE_SIZE = 1024


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    from napari_muvit.data.synthetic import synthetic_slide, write_synthetic_slide

    path = tmp_path_factory.mktemp("teach") / "slide.ome.zarr"
    write_synthetic_slide(path, size=SLIDE_SIZE, seed=0)
    _, truth, names = synthetic_slide(SLIDE_SIZE, seed=0)
    return path, truth, names


@pytest.fixture
def viewer_with_slide(make_napari_viewer, slide, monkeypatch, tmp_path):
    from napari_muvit.widgets._reader import read_slide

    monkeypatch.setenv("NAPARI_MUVIT_THREADS", "1")  # the worker process is spawned with this environment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    viewer = make_napari_viewer()
    data, kwargs, _ = read_slide(str(slide[0]))[0]
    viewer.add_image(data, **kwargs)
    widget = TeachWidget(viewer)
    viewer.window.add_dock_widget(widget, name="teach")
    return viewer, widget


def _thread_job(fn):
    """`TrainingTab._make_job` replacement: `fn(kw, progress, cancel, on_record)` in a thread (widget logic only)."""

    def make(self, kw):
        return EngineJob(lambda **cb: fn(self, kw, **cb), description=self.description, unit="steps", records=True)

    return make


def _heartbeat(qtbot):
    """Largest gap (ms) between 10 ms QTimer ticks on the GUI thread: how long the GUI was frozen."""
    from qtpy.QtCore import QTimer

    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    return timer, ticks


def _check_heartbeat(qtbot, gaps, what):
    """The GUI thread kept ticking while the model trained (a job run on the GUI thread gives no tick
    until it ends). How long the gaps are is measured by ``benchmarks/heartbeat.py --teach``, not here."""
    assert len(gaps) > 10, f"{what}: the GUI thread ticked only {len(gaps)} times"


def _gaps_ms(ticks, until):
    """Heartbeat gaps (ms) of the ticks before `until` (training), and the largest one after it."""
    ticks = np.asarray(ticks)
    during = np.diff(ticks[ticks <= until]) * 1000
    after = np.diff(ticks[ticks >= ticks[ticks <= until][-1]]) * 1000
    return during, (after.max() if after.size else 0.0)


def _gstrokes(truth, per_class=16, half=4, seed=0):
    """Ground-truth strokes, as a user would paint them: `per_class` small dabs on each class, each dab
    labelling only the pixels of that class (its GT value) in a `2*half+1` square around a random pixel of it."""
    rng = np.random.default_rng(seed)
    strokes = np.zeros_like(truth, dtype=np.uint8)
    for c in np.unique(truth):
        ys, xs = np.nonzero(truth == c)
        for i in rng.choice(len(ys), per_class, replace=False):
            y0, x0 = max(0, ys[i] - half), max(0, xs[i] - half)
            window = truth[y0 : ys[i] + half + 1, x0 : xs[i] + half + 1]
            strokes[y0 : ys[i] + half + 1, x0 : xs[i] + half + 1][window == c] = c
    return strokes


def test_scribble_probe_predicts_the_slide(viewer_with_slide, slide, qtbot):
    viewer, widget = viewer_with_slide
    _, truth, names = slide
    tab = widget.scribble
    assert tab.image.value is viewer.layers[0]
    layer = tab.new_scribble_layer()
    assert layer.data.shape == truth.shape and tab.scribbles.value is layer
    layer.data = _gstrokes(truth)
    tab.region.setCurrentText("whole slide")
    timer, ticks = _heartbeat(qtbot)
    job = tab.start()
    assert job is not None
    # the dock hears of the end by queued signals: Start comes back once every handler has run
    qtbot.waitUntil(lambda: not job.running and tab.start_btn.isEnabled(), timeout=90_000)
    timer.stop()
    assert job.error is None, job.error
    result = tab.result
    assert result["pid"] != os.getpid()  # fitted and predicted in the worker process
    assert result["train_accuracy"] > 0.8
    pred = np.asarray(viewer.layers[PROBE_LAYER].data[0] if viewer.layers[PROBE_LAYER].multiscale
                      else viewer.layers[PROBE_LAYER].data)
    assert pred.shape == truth.shape
    # labels layer = class index + 1 = ground truth; Dice per cell class vs the class-frequency chance level
    dice, chance = [], []
    for c in (1, 2):
        p, t = pred == c + 1, truth == c + 1
        dice.append(2 * (p & t).sum() / (p.sum() + t.sum()))
        chance.append(t.mean())
    print("confusion", [[int(((pred == a + 1) & (truth == b + 1)).sum()) for a in range(3)] for b in range(3)],
          np.unique(pred, return_counts=True))
    print(f"scribble probe Dice {dice} chance {chance} in {result['seconds']:.1f} s")
    assert min(dice) > 0.15 and min(dice) > 5 * max(chance)
    cells = 2 * ((pred > 1) & (truth > 1)).sum() / ((pred > 1).sum() + (truth > 1).sum())
    print(f"cells vs background Dice {cells:.3f}")
    assert cells > 0.3  # cells cover 4 % of the slide: chance is about 0.04
    # each class is drawn in the same colour in the scribbles and in the probe's prediction
    probe_layer = viewer.layers[PROBE_LAYER]
    values = np.arange(1, 4)
    np.testing.assert_allclose(probe_layer.colormap.map(values), layer.colormap.map(values), atol=1e-6)
    assert len({tuple(np.round(c, 3)) for c in layer.colormap.map(values)}) == 3  # three different colours
    gaps, display = _gaps_ms(ticks, tab.finished_at)
    print(f"GUI heartbeat during the probe: max gap {gaps.max():.0f} ms, p99 {np.percentile(gaps, 99):.0f} ms "
          f"over {len(gaps)} ticks; "
          f"building the result layers: {display:.0f} ms")
    _check_heartbeat(qtbot, gaps, "scribble probe")
    # the live plot got the probe's loss curve
    xs, ys = tab.plot.series["loss"]
    assert xs == [float(s) for s in range(1, len(result["losses"]) + 1)]
    assert ys == pytest.approx(result["losses"]) and ys[-1] < ys[0]
    assert tab.plot.series["accuracy"][1] == pytest.approx([result["train_accuracy"]])
    # saved as a model folder that loads like any other (what the predict widget does)
    from napari_muvit.model import load_model

    tab.save_path.value = str(slide[0].parent / "probe-model")
    folder = tab.save()
    model = load_model(folder)
    assert model.card.task == "segmentation" and model.card.head["head"] == "probe"
    assert model.card.class_names == result["class_names"]


def test_new_strokes_retrain_once_debounced(viewer_with_slide, qtbot, monkeypatch):
    viewer, widget = viewer_with_slide
    tab = widget.scribble
    layer = tab.new_scribble_layer()
    starts = []
    monkeypatch.setattr(type(tab), "start", lambda self, *a: starts.append(tab.debounce.isActive()))
    tab.debounce.setInterval(150)
    layer.paint((10, 10), 1)  # before a first training: painting alone trains nothing
    qtbot.wait(300)
    assert starts == [] and not tab.debounce.isActive()
    tab.result = {"fit": None}  # a probe exists: new strokes retrain it
    tab.debounce.setInterval(60_000)  # strokes only (re)start the wait; nothing trains while painting
    for k in range(5):
        layer.paint((20 + 5 * k, 20), 2)
        qtbot.wait(30)
        assert starts == [] and tab.debounce.isActive()
    tab.debounce.setInterval(150)
    tab.debounce.start()  # the last stroke's wait, shortened
    qtbot.waitUntil(lambda: len(starts) == 1, timeout=5000)
    qtbot.wait(300)
    assert starts == [False]  # one round, started by the timer itself
    tab.auto.setChecked(False)
    layer.paint((60, 60), 1)
    qtbot.wait(300)
    assert len(starts) == 1


def test_pretrain_runs_off_the_gui_thread_and_cancels(viewer_with_slide, qtbot, tmp_path):
    viewer, widget = viewer_with_slide
    tab = widget.pretrain
    tab.levels.value = "1,4"
    tab.size.setValue(32)
    tab.batch.setValue(2)
    tab.steps.setValue(100_000)
    tab.out.value = str(tmp_path / "mae")
    timer, ticks = _heartbeat(qtbot)
    job = tab.start()
    assert job is not None and tab.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: job.done >= 3, timeout=60_000)
    t_cancel = time.perf_counter()
    tab.cancel_btn.click()
    qtbot.waitUntil(lambda: not job.running, timeout=30_000)
    took = time.perf_counter() - t_cancel
    # the dock hears of the end by a queued signal, after the job stops running
    qtbot.waitUntil(lambda: tab.status.text().startswith("cancelled"), timeout=10_000)
    timer.stop()
    assert job.error is None, job.error
    result = tab.result
    assert result.pid != os.getpid()  # trained in the worker process
    assert result.cancelled and 3 <= result.steps_done < 100_000 and job.stopping_at is not None
    assert tab.status.text().startswith("cancelled") and tab.start_btn.isEnabled() and not tab.cancel_btn.isEnabled()
    # reconstruction previews: one layer per level on that level's crop, added one per event-loop turn
    qtbot.waitUntil(lambda: len(tab.previews) == 2, timeout=10_000)
    assert [layer.name for layer in tab.previews] == ["MAE reconstruction x1", "MAE reconstruction x4"]
    big = tab.previews[1]
    np.testing.assert_allclose(big.scale, [4, 4])
    assert big.data.shape == (32, 32) and np.isfinite(big.data).all()
    print(f"pre-train cancelled after {result.steps_done} steps, {took:.2f} s after the click")
    # the live loss plot got every step's loss
    xs, ys = tab.plot.series["loss"]
    assert xs == [float(r["step"]) for r in result.history] and ys == pytest.approx([r["loss"] for r in result.history])
    from napari_muvit.model import load_model

    assert load_model(result.model_dir).card.task == "mae"
    gaps, display = _gaps_ms(ticks, tab.finished_at)
    print(f"GUI heartbeat during pre-training: max gap {gaps.max():.0f} ms, p99 {np.percentile(gaps, 99):.0f} "
          f"ms over {len(gaps)} ticks; "
          f"building the reconstruction layers: {display:.0f} ms")
    _check_heartbeat(qtbot, gaps, "pre-training")


def test_finetune_from_a_labels_layer_saves_a_model_with_live_metrics(viewer_with_slide, slide, qtbot, tmp_path):
    from napari_muvit.model import load_model

    viewer, widget = viewer_with_slide
    _, truth, _ = slide
    sparse = np.zeros_like(truth, dtype=np.uint8)
    sparse[256:640, 256:640] = truth[256:640, 256:640]  # one labelled block (all 3 classes), 0 elsewhere
    labels = viewer.add_labels(sparse, name="annotations")
    tab = widget.finetune
    tab.annotations.refresh()
    tab.annotations.value = labels
    tab.epochs.setValue(2)
    tab.out.value = str(tmp_path / "finetuned")
    job = tab.start()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=90_000)
    qtbot.wait(700)  # the plot's coalesced render
    assert job.error is None, job.error
    result = tab.result
    assert result.pid != os.getpid()
    assert not result.cancelled and len(result.history) == 2
    # one plot point per epoch, read from the run's history while it trains
    xs, ys = tab.plot.series["train_loss"]
    assert xs == [1.0, 2.0] and ys == pytest.approx([r["train_loss"] for r in result.history])
    assert "mDSC" in tab.plot.series or "accuracy" in tab.plot.series
    model = load_model(result.model_dir)  # what the predict widget loads from that folder
    assert model.card.task == "segmentation" and len(model.card.class_names) == 3


def test_rois_from_a_shapes_layer_are_world_pixel_polygons(make_napari_viewer):
    from napari_muvit.widgets.teach.finetune import rois_from_layer

    viewer = make_napari_viewer()
    rects = [np.array([[10, 20], [10, 60], [50, 60], [50, 20]]), np.array([[100, 100], [100, 140], [130, 140], [130, 100]])]
    layer = viewer.add_shapes(rects, shape_type="rectangle", scale=(0.5, 0.5),
                              features={"class": ["tumour", "stroma"]})
    rois = rois_from_layer(layer, pixel_size=(0.5, 0.5))
    assert [r["label"] for r in rois] == ["tumour", "stroma"]
    np.testing.assert_allclose(rois[1]["polygon"].min(0), [100, 100])  # data px of a 0.5-scaled layer = world px
    np.testing.assert_allclose(rois[1]["polygon"].max(0), [130, 140])
    unnamed = viewer.add_shapes(rects, shape_type="rectangle")
    with pytest.raises(ValueError, match="'class' column"):
        rois_from_layer(unnamed)


def test_strokes_during_training_retrain_once_afterwards(viewer_with_slide, qtbot, monkeypatch):
    viewer, widget = viewer_with_slide
    tab = widget.scribble
    layer = tab.new_scribble_layer()
    tab.region.setCurrentText("whole slide")
    tab.debounce.setInterval(100)
    runs, active = [], []

    def fake_fit(self, kw, progress, cancel, on_record):  # the widget logic only: a probe round of 0.6 s
        runs.append(len(active))  # rounds still training when this one starts
        active.append(1)
        time.sleep(0.6)
        active.pop()
        return {"layer": None, "seconds": 0.6, "model_dir": None}

    monkeypatch.setattr(type(tab), "_make_job", _thread_job(fake_fit))  # the class: see above
    tab.start()
    qtbot.waitUntil(lambda: len(runs) == 1, timeout=5000)
    for k in range(3):  # strokes while the first round trains
        layer.paint((30 + 5 * k, 30), 2)
        qtbot.wait(20)
    qtbot.waitUntil(lambda: len(runs) == 2, timeout=5000)
    qtbot.waitUntil(lambda: not tab.job.running, timeout=5000)
    qtbot.wait(400)
    assert runs == [0, 0]  # exactly one more round, started after the first ended
    assert tab.status.text().startswith("probe trained") and tab.start_btn.isEnabled()


def test_finetune_a_tile_classifier_from_roi_shapes(viewer_with_slide, qtbot, tmp_path):
    from napari_muvit.model import load_model

    viewer, widget = viewer_with_slide
    boxes = [np.array([[y, x], [y, x + 96], [y + 96, x + 96], [y + 96, x]], float)
             for y, x in ((64, 64), (64, 320), (640, 640), (768, 800))]
    viewer.add_shapes(boxes, shape_type="rectangle", name="rois",
                      features={"class": ["streak", "streak", "ring", "ring"]})
    tab = widget.finetune
    tab.task.setCurrentText("classification")
    tab.annotations.value = viewer.layers["rois"]
    tab.epochs.setValue(1)
    tab.out.value = str(tmp_path / "classifier")
    job = tab.start()
    assert job is not None
    # the dock hears of the end by queued signals: Start comes back once every handler has run
    qtbot.waitUntil(lambda: not job.running and tab.start_btn.isEnabled(), timeout=90_000)
    assert job.error is None, job.error
    model = load_model(tab.result.model_dir)
    assert model.card.task == "classification" and sorted(model.card.class_names) == ["ring", "streak"]
    assert len(tab.result.history) == 1 and "train_loss" in tab.plot.series


def test_no_progress_line_after_the_job_ended(viewer_with_slide, qtbot, monkeypatch):
    """Reports and timers that fire after the outcome never replace the tab's final status (EngineJob's rule)."""
    import threading
    from types import SimpleNamespace

    from qtpy.QtWidgets import QApplication

    viewer, widget = viewer_with_slide
    tab = widget.pretrain
    captured = {}

    def fake_run(self, kw, progress, cancel, on_record):  # three steps, then waits for Cancel like the real loop
        captured["progress"] = progress
        for step in (1, 2, 3):
            progress(step, 100)
        while not cancel():
            time.sleep(0.01)
        return SimpleNamespace(cancelled=True, preview=None, preview_error="not needed here", steps_done=3,
                               model_dir="m")

    monkeypatch.setattr(type(tab), "_prepare", lambda self: {})
    monkeypatch.setattr(type(tab), "_make_job", _thread_job(fake_run))
    events, at_outcome = [], []
    job = tab.start()
    job.progressed.connect(lambda now, todo, text: events.append(("progressed", text)))

    def late_arrivals(_result):  # what can reach the GUI thread once the outcome is out
        events.append(("cancelled", tab.status.text()))
        straggler = threading.Thread(target=captured["progress"], args=(50, 100))  # a batch still in flight
        straggler.start()
        straggler.join()
        job._catch_up.timeout.emit()  # the rate limit's catch-up timer
        job._phase_timer.timeout.emit()  # the finishing/loading phase's ticking seconds
        job._enter("finishing")
        QApplication.processEvents()  # the straggler's queued report
        at_outcome.append(tab.status.text())

    job.cancelled.connect(late_arrivals)
    qtbot.waitUntil(lambda: any(kind == "progressed" and "3/100 steps" in text for kind, text in events),
                    timeout=5000)
    assert tab.status.text().startswith("3/100 steps")
    tab.cancel_btn.click()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=5000)
    QApplication.processEvents()
    final = "cancelled after 3 steps; model saved to m"
    assert events[-1][0] == "cancelled" and events[-1][1].startswith(final), events[-3:]
    assert at_outcome[0].startswith(final) and tab.status.text().startswith(final)
    assert [kind for kind, _ in events].count("cancelled") == 1
    assert not job.running and job.state.phase == "ended" and not tab.cancel_btn.isEnabled()


def test_a_failing_finetune_shows_the_engine_sentence(viewer_with_slide, slide, qtbot, tmp_path, monkeypatch):
    import napari_muvit.widgets.teach.training_tab as training_tab

    shown = []
    monkeypatch.setattr(training_tab, "show_error", shown.append)
    viewer, widget = viewer_with_slide
    viewer.add_labels(slide[1].astype(np.uint8), name="annotations")
    tab = widget.finetune
    tab.annotations.refresh()
    tab.annotations.value = viewer.layers["annotations"]
    missing = tmp_path / "no-such-model"
    tab.model.value = str(missing)
    tab.out.value = str(tmp_path / "finetuned")
    job = tab.start()
    qtbot.waitUntil(lambda: not job.running and tab.start_btn.isEnabled(), timeout=90_000)
    assert tab.status.text() == "failed" and tab.result is None
    assert len(shown) == 1 and shown[0] == job.error
    assert str(missing) in shown[0] and "\n" not in shown[0] and "Traceback" not in shown[0]


def test_records_drive_the_plot_in_order_and_stop_at_the_outcome(viewer_with_slide, qtbot, monkeypatch):
    """Rows reach the plot in the order the job gave them; a row given after the outcome is never drawn."""
    viewer, widget = viewer_with_slide
    tab = widget.finetune
    late = []

    def fake_train(self, kw, progress, cancel, on_record):
        for epoch in range(1, 6):
            progress(epoch, 5)
            on_record({"epoch": epoch, "train_loss": 1.0 / epoch, "mDSC": 0.1 * epoch})
        late.append(on_record)
        from types import SimpleNamespace

        return SimpleNamespace(cancelled=False, model_dir="m")

    monkeypatch.setattr(type(tab), "_prepare", lambda self: {})
    monkeypatch.setattr(type(tab), "_make_job", _thread_job(fake_train))
    job = tab.start()
    qtbot.waitUntil(lambda: not job.running and tab.start_btn.isEnabled(), timeout=10_000)
    late[0]({"epoch": 6, "train_loss": 0.01})  # a straggler after the outcome
    qtbot.wait(100)
    xs, ys = tab.plot.series["train_loss"]
    assert xs == [1.0, 2.0, 3.0, 4.0, 5.0] and ys == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert tab.plot.series["mDSC"][1] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


_FRESH_GUI = r"""
import os, sys, time
from qtpy.QtWidgets import QApplication
import napari
from napari_muvit.widgets._reader import read_slide
from napari_muvit.widgets.teach.dock import TeachWidget

viewer = napari.Viewer(show=False)
for data, kwargs, kind in read_slide(sys.argv[1]):
    getattr(viewer, f"add_{kind}")(data, **kwargs)
widget = TeachWidget(viewer)
tab = widget.pretrain
tab.levels.value = "1,4"
tab.size.setValue(32)
tab.batch.setValue(2)
tab.steps.setValue(2)
tab.out.value = sys.argv[2]
rows = []
job = tab.start()
job.recorded.connect(lambda row: rows.append(row["step"]))
app = QApplication.instance()
deadline = time.monotonic() + 240
while (job.running or not tab.start_btn.isEnabled() or tab.layer_steps.pending) and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.01)
print("RESULT", job.error, tab.result.pid != os.getpid(), rows, len(tab.previews), "torch" in sys.modules,
      flush=True)  # flushed now: what the interpreter does at exit is not what this test is about
"""


def test_training_never_imports_torch_in_the_gui_process(slide, tmp_path):
    """A fresh napari session pre-trains from the dock: the GUI process ends without torch imported."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NAPARI_MUVIT_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _FRESH_GUI, str(slide[0]), str(tmp_path / "mae")], env=env,
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, f"exit code {done.returncode}: {done.stderr[-3000:]}"
    assert line == "RESULT None True [1, 2] 2 False", line


def test_a_gigapixel_scribble_canvas_goes_to_the_worker_as_its_store(viewer_with_slide, monkeypatch):
    """A canvas too big for memory is a zarr store on disk; the probe job gets its path, painted strokes included."""
    import zarr

    import napari_muvit.widgets.teach.probe as probe

    monkeypatch.setattr(probe, "CANVAS_IN_MEMORY_PX", 1000)
    viewer, widget = viewer_with_slide
    tab = widget.scribble
    layer = tab.new_scribble_layer()
    layer.paint((100, 200), 2, refresh=False)
    kw = tab._prepare()
    assert isinstance(kw["labels"], str) and kw["labels"] == layer.metadata[probe.STORE_KEY]
    stored = zarr.open_array(kw["labels"], mode="r")
    assert stored.shape == (SLIDE_SIZE, SLIDE_SIZE) and stored[100, 200] == 2 and int(stored[0:50, 0:50].max()) == 0
    small = viewer.add_labels(np.zeros((SLIDE_SIZE, SLIDE_SIZE), np.uint8), name="small")
    tab.scribbles.value = small
    small.data[5, 6] = 1
    labels = tab._prepare()["labels"]
    assert isinstance(labels, np.ndarray) and labels[5, 6] == 1 and labels is not small.data  # a snapshot


def test_an_image_layer_without_a_file_is_sent_as_its_pixels(viewer_with_slide, slide, qtbot, tmp_path):
    """A layer that only lives in memory goes to the worker process as a numpy array and trains there."""
    from napari_muvit.widgets.teach.training_tab import slide_source

    viewer, widget = viewer_with_slide
    pixels = np.asarray(viewer.layers[0].data[0] if viewer.layers[0].multiscale else viewer.layers[0].data)
    pixels = np.ascontiguousarray(pixels[:512, :512])
    layer = viewer.add_image(pixels, name="in memory", rgb=viewer.layers[0].rgb)
    sent = slide_source(layer)
    assert isinstance(sent, np.ndarray) and sent.shape == pixels.shape
    assert isinstance(slide_source(viewer.layers[0]), str)  # read from the .ome.zarr: its path
    tab = widget.pretrain
    tab.image.value = layer
    tab.levels.value = "1,4"
    tab.size.setValue(32)
    tab.batch.setValue(2)
    tab.steps.setValue(2)
    tab.out.value = str(tmp_path / "mae")
    job = tab.start()
    qtbot.waitUntil(lambda: not job.running and tab.start_btn.isEnabled(), timeout=120_000)
    assert job.error is None, job.error
    assert tab.result.pid != os.getpid() and tab.result.steps_done == 2 and not tab.result.cancelled
    assert tab.plot.series["loss"][0] == [1.0, 2.0]
    qtbot.waitUntil(lambda: len(tab.previews) == 2, timeout=10_000)
    assert [p.name for p in tab.previews] == ["MAE reconstruction x1", "MAE reconstruction x4"]


def test_fine_tune_and_pre_train_tabs_are_built_after_the_dock_opens(make_napari_viewer, qtbot):
    """Only the scribble tab is built with the dock; the other two follow, one per event-loop turn, or at once
    when asked for or chosen; the tab order and titles never change."""
    from qtpy.QtWidgets import QApplication

    from napari_muvit.widgets.teach.dock import TeachWidget
    from napari_muvit.widgets.teach.finetune import FinetuneTab
    from napari_muvit.widgets.teach.pretrain import PretrainTab

    viewer = make_napari_viewer()
    w = TeachWidget(viewer)
    titles = [w.tabs.tabText(k) for k in range(3)]
    assert titles == ["Scribble probe", "Fine-tune", "Pre-train"]
    assert w._built == {}  # nothing but the scribble tab while napari adds the dock
    QApplication.processEvents()
    assert list(w._built) == ["finetune"]  # one turn: one tab
    qtbot.waitUntil(lambda: len(w._built) == 2, timeout=2000)
    assert isinstance(w.tabs.widget(1), FinetuneTab) and isinstance(w.tabs.widget(2), PretrainTab)
    assert w.finetune is w.tabs.widget(1) and w.pretrain is w.tabs.widget(2)
    assert [w.tabs.tabText(k) for k in range(3)] == titles and w.tabs.currentIndex() == 0

    chosen = TeachWidget(viewer)
    chosen.tabs.setCurrentIndex(2)  # the user picks Pre-train before its turn came
    assert isinstance(chosen.tabs.widget(2), PretrainTab) and chosen.tabs.currentIndex() == 2
    asked = TeachWidget(viewer)
    assert isinstance(asked.finetune, FinetuneTab) and asked.tabs.widget(1) is asked.finetune  # asked for: built now
