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
