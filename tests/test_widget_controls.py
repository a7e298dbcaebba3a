"""Every control of the three docks explains itself, and the same kind of control looks the same in each."""

from __future__ import annotations

import pytest


def _qt_controls(root):
    from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QTableWidget

    kinds = (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QTableWidget)
    return [w for w in root.findChildren(kinds) if w.isVisibleTo(root) and not w.objectName().startswith("qt_")]


def _describe(w):
    text = getattr(w, "text", lambda: "")()
    return f"{type(w).__name__} {text!r}"


@pytest.fixture
def docks(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    monkeypatch.setenv("NAPARI_MUVIT_SETTINGS_DIR", str(tmp_path / "settings"))
    import numpy as np

    from napari_muvit.widgets.attention.dock import AttentionProbeWidget
    from napari_muvit.widgets.predict.dock import PredictWidget
    from napari_muvit.widgets.teach.dock import TeachWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((128, 128), np.float32), name="slide")
    out = {"predict": PredictWidget(viewer, use_process=False), "teach": TeachWidget(viewer),
           "attention": AttentionProbeWidget(viewer)}
    for name, w in out.items():
        viewer.window.add_dock_widget(w, name=name)
    qtbot.wait(50)  # sections below the fold are shown one per event-loop turn after the dock is added
    return out


def test_every_control_has_a_tooltip(docks):
    teach = docks["teach"]
    roots = {"predict": docks["predict"], "attention": docks["attention"],
             **{f"teach {k}": getattr(teach, k) for k in ("scribble", "finetune", "pretrain")}}
    missing = []
    for dock, root in roots.items():
        controls = _qt_controls(root)
        print(dock, len(controls), [_describe(w) for w in controls if not w.toolTip()])
        assert len(controls) >= 6, dock
        for w in controls:
            if not w.toolTip() and not (w.parent() is not None and w.parent().toolTip()):
                missing.append(f"{dock}: {_describe(w)}")
    assert missing == []


def test_folder_pickers_look_the_same_in_every_dock(docks):
    from qtpy.QtWidgets import QPushButton

    labels = set()
    predict = docks["predict"]
    labels.add(predict.model.browse.text())
    for root in (docks["attention"], docks["teach"]):
        for b in root.findChildren(QPushButton):
            if b.text() in ("Choose directory", "Select file", "Select files", "…", "...", "Choose…"):
                labels.add(b.text())
    assert labels == {"Choose…"}


def test_run_and_status_stay_visible_without_scrolling(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The predict dock at 1000 px height: Run, Cancel and the status line are on screen, not below the fold."""
    from napari_muvit.widgets.predict.dock import PredictWidget

    monkeypatch.setenv("NAPARI_MUVIT_SETTINGS_DIR", str(tmp_path / "settings"))
    w = PredictWidget(make_napari_viewer(), use_process=False)
    qtbot.addWidget(w)
    w.setFixedSize(420, 1000)
    w.show()
    qtbot.waitExposed(w)
    w.status.setText("412/1351 tiles (498 background tiles skipped), 3.1 tiles/s, 4 min 10 s left")
    qtbot.waitUntil(lambda: not w.status.visibleRegion().isEmpty(), timeout=5000)
    for control in (w.run_button, w.cancel_button, w.status):
        assert not control.visibleRegion().isEmpty(), control.objectName() or type(control).__name__
        top = control.mapTo(w, control.rect().topLeft()).y()
        bottom = control.mapTo(w, control.rect().bottomRight()).y()
        assert 0 <= top and bottom <= 1000
        assert control.visibleRegion().boundingRect().height() == control.height()  # fully shown
    # pinned outside the scrolling settings: however long the settings grow, the main action stays put
    from qtpy.QtWidgets import QScrollArea

    (scroll,) = w.findChildren(QScrollArea)
    assert not any(scroll.isAncestorOf(c) for c in (w.run_button, w.cancel_button, w.status))


def test_levels_are_tick_boxes_offered_by_the_model_in_every_dock(docks, tmp_path):
    """Attention and teach docks offer levels as the predict dock does: one 'x<f>' tick box per model level."""
    from qtpy.QtWidgets import QCheckBox

    from napari_muvit.engine.testing import tiny_segmenter
    from napari_muvit.model import save_model
    from napari_muvit.widgets.teach.pretrain import NEW_MODEL_LEVELS

    def ticks(widget):
        return {b.text(): b.isChecked() for b in widget.findChildren(QCheckBox)}

    predict, attention, teach = docks["predict"], docks["attention"], docks["teach"]
    demo = {"x1": True, "x4": True, "x16": True}
    assert {b.text(): b.isChecked() for b in predict.levels.boxes.values()} == demo  # the predict dock's boxes
    assert ticks(attention._levels) == demo and attention._levels.value == "1,4,16"
    assert ticks(teach.finetune.levels) == demo and teach.finetune._levels_choice() is None  # the base's own
    assert ticks(teach.pretrain.levels) == {f"x{f}": f in (1, 4, 16) for f in NEW_MODEL_LEVELS}
    assert all(isinstance(b, QCheckBox) and b.toolTip() for w in (attention._levels, teach.pretrain.levels)
               for b in w.findChildren(QCheckBox))

    folder = tmp_path / "two-levels"
    save_model(tiny_segmenter(levels=(1, 4), patch=8, crop=64), folder)
    attention._model.value = str(folder)  # another model: its own levels are offered
    teach.finetune.model.value = str(folder)
    assert ticks(attention._levels) == {"x1": True, "x4": True}
    assert ticks(teach.finetune.levels) == {"x1": True, "x4": True}
    attention._levels.value = "4"
    assert ticks(attention._levels) == {"x1": False, "x4": True}
    attention._start_next = lambda: None  # the request a click would send, not run
    attention.probe((10.0, 10.0))
    assert attention._pending["levels"] == "4" and attention._pending["key"][1:] == (str(folder), "4")
    with pytest.raises(ValueError, match="x16"):
        attention._levels.value = "1,16"
    teach.finetune.levels.value = "4"
    assert teach.finetune._levels_choice() == "4"
    teach.finetune.levels.value = ""
    with pytest.raises(ValueError, match="Tick at least one level"):
        teach.finetune._levels_choice()


def test_teach_start_stays_visible_without_scrolling(make_napari_viewer, qtbot):
    """Every teach tab at 1000 px height: Start, Cancel and the status line are on screen."""
    from napari_muvit.widgets.teach.dock import TeachWidget

    viewer = make_napari_viewer()
    w = TeachWidget(viewer)
    qtbot.addWidget(w)
    w.setFixedSize(420, 1000)
    w.show()
    qtbot.waitExposed(w)
    for name in ("scribble", "finetune", "pretrain"):
        tab = getattr(w, name)
        w.tabs.setCurrentWidget(tab)
        tab.status.setText("cancelled after 120 steps; model saved to /a/rather/long/folder/name/for/a/model")
        qtbot.waitUntil(lambda t=tab: not t.start_btn.visibleRegion().isEmpty(), timeout=5000)
        for control in (tab.start_btn, tab.cancel_btn, tab.status):
            bottom = control.mapTo(w, control.rect().bottomRight()).y()
            assert 0 < bottom <= 1000, (name, type(control).__name__, bottom)
            assert control.visibleRegion().boundingRect().height() == control.height(), name


def test_docks_open_without_importing_torch_or_matplotlib_on_the_gui_thread(tmp_path):
    """Importing torch (4-8 s) or matplotlib (0.6-2 s) holds the GUI thread: no dock may do it there while it
    opens (a fresh interpreter, as a napari session before any run; plots import matplotlib on their own
    drawing thread)."""
    import os
    import subprocess
    import sys

    code = """
import sys, threading
first = {}
class Spy:  # which thread imports these packages first
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "matplotlib") and name not in first:
            first[name] = threading.current_thread().name
sys.meta_path.insert(0, Spy())
import napari
import numpy as np
viewer = napari.Viewer(show=False)
viewer.add_image(np.zeros((256, 256), np.uint8), name="slide")
from napari_muvit.widgets.attention.dock import AttentionProbeWidget
from napari_muvit.widgets.predict.dock import PredictWidget
from napari_muvit.widgets.slides.dock import SlideListWidget
from napari_muvit.widgets.teach.dock import TeachWidget
for dock in (PredictWidget, AttentionProbeWidget, TeachWidget, SlideListWidget):
    viewer.window.add_dock_widget(dock(viewer) if dock is not PredictWidget else dock(viewer, use_process=False))
    print("opened", dock.__name__, first.get("torch"), first.get("matplotlib"))
viewer.close()
"""
    env = dict(os.environ, NAPARI_MUVIT_SETTINGS_DIR=str(tmp_path / "settings"),
               NAPARI_MUVIT_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    rows = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("opened ")]
    assert [row[0] for row in rows] == ["PredictWidget", "AttentionProbeWidget", "TeachWidget",
                                        "SlideListWidget"], out.stderr[-2000:]
    assert all(row[1] == "None" for row in rows), rows  # torch: not imported at all
    assert all(row[2] != "MainThread" for row in rows), rows  # matplotlib: a plot's drawing thread, if any


def test_attention_actions_stay_visible_without_scrolling(make_napari_viewer, qtbot):
    """The attention dock at 1000 px height: its buttons, the status line and the legend are on screen."""
    from napari_muvit.widgets.attention.dock import AttentionProbeWidget

    w = AttentionProbeWidget(make_napari_viewer())
    native = w
    qtbot.addWidget(native)
    native.setFixedSize(420, 1000)
    native.show()
    qtbot.waitExposed(native)
    w._legend.setText("Attention of the query token: see-through = none, red -> yellow -> white = most; one scale "
                       "for all levels, 0 to 0.0177: colours compare across levels.")
    qtbot.waitUntil(lambda: not w._feature_btn.visibleRegion().isEmpty(), timeout=5000)
    for control in (w._feature_btn, w._clear_btn, w._status, w._legend, w._levels):
        widget = control
        bottom = widget.mapTo(native, widget.rect().bottomRight()).y()
        assert 0 < bottom <= 1000, (type(control).__name__, bottom)
        assert widget.visibleRegion().boundingRect().height() == widget.height(), type(control).__name__
