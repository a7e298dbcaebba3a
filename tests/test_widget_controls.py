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
def docks(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_MUVIT_SETTINGS_DIR", str(tmp_path / "settings"))
    import numpy as np

    from napari_muvit.widgets.attention import AttentionProbeWidget
    from napari_muvit.widgets.predict import PredictWidget
    from napari_muvit.widgets.teach import TeachWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((128, 128), np.float32), name="slide")
    out = {"predict": PredictWidget(viewer, use_process=False), "teach": TeachWidget(viewer),
           "attention": AttentionProbeWidget(viewer)}
    for name, w in out.items():
        viewer.window.add_dock_widget(w, name=name)
    return out


def test_every_control_has_a_tooltip(docks):
    teach = docks["teach"]
    roots = {"predict": docks["predict"], "attention": docks["attention"].native,
             **{f"teach {k}": getattr(teach, k).native for k in ("scribble", "finetune", "pretrain")}}
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
    for root in (docks["attention"].native, docks["teach"]):
        for b in root.findChildren(QPushButton):
            if b.text() in ("Choose directory", "Select file", "Select files", "…", "...", "Choose…"):
                labels.add(b.text())
    assert labels == {"Choose…"}


def test_run_and_status_stay_visible_without_scrolling(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The predict dock at 1000 px height: Run, Cancel and the status line are on screen, not below the fold."""
    from napari_muvit.widgets.predict import PredictWidget

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
