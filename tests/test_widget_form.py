"""The dock building blocks: a layer picker that keeps its choice, a path field, the status line and buttons."""

from __future__ import annotations

import numpy as np
import pytest


def test_layer_picker_keeps_its_choice_and_falls_back_to_the_first(make_napari_viewer):
    from napari.layers import Image

    from napari_muvit.widgets.form import LayerPicker

    viewer = make_napari_viewer()
    picker = LayerPicker(viewer, lambda: [ly for ly in viewer.layers if isinstance(ly, Image)])
    assert picker.value is None and picker.choices == []
    seen = []
    picker.currentTextChanged.connect(seen.append)
    a = viewer.add_image(np.zeros((8, 8)), name="a")
    assert picker.value is a and seen == ["a"]
    b = viewer.add_image(np.zeros((8, 8)), name="b")
    viewer.add_points(np.zeros((1, 2)), name="pts")  # not offered
    assert [ly.name for ly in picker.choices] == ["a", "b"] and picker.value is a
    picker.value = b
    assert picker.value is b and seen == ["a", "b"]
    with pytest.raises(ValueError, match="'pts' cannot be chosen"):
        picker.value = viewer.layers["pts"]
    viewer.layers.remove("b")
    assert picker.value is a and seen == ["a", "b", "a"]
    viewer.layers.remove("a")
    assert picker.value is None and picker.count() == 0 and seen[-1] == ""


def test_path_edit_reports_each_new_path_once(qtbot):
    from napari_muvit.widgets.form import CHOOSE, PathEdit

    edit = PathEdit(mode="folder", value="demo")
    qtbot.addWidget(edit)
    seen = []
    edit.changed.connect(seen.append)
    edit.value = "/data/model"
    edit.value = "/data/model"  # the same path again: no new report
    edit.edit.editingFinished.emit()
    assert seen == ["/data/model"] and edit.value == "/data/model" and str(edit.path()) == "/data/model"
    edit.value = ""
    assert seen == ["/data/model", ""] and edit.path() is None
    assert edit.button.text() == CHOOSE
    edit.setToolTip("where")
    assert edit.edit.toolTip() == edit.button.toolTip() == "where"
    with pytest.raises(ValueError, match="'dir' is not one of"):
        PathEdit(mode="dir")


def test_status_line_progress_and_run_buttons(qtbot):
    from napari_muvit.widgets.form import RunButtons, StatusLine

    status = StatusLine("ready")
    qtbot.addWidget(status)
    assert status.text() == status.value == "ready" and status.bar.isHidden()
    status.progress(3, 12, "3/12 tiles")
    assert status.text() == "3/12 tiles" and not status.bar.isHidden()
    assert (status.bar.value(), status.bar.maximum()) == (3, 12)
    status.progress(0, 0, "loading")  # no count yet: the bar keeps its last state
    assert status.text() == "loading" and (status.bar.value(), status.bar.maximum()) == (3, 12)
    status.idle()
    assert status.bar.isHidden()
    buttons = RunButtons("Start")
    qtbot.addWidget(buttons)
    assert buttons.run.text() == "Start" and buttons.run.isEnabled() and not buttons.cancel.isEnabled()
    buttons.set_running(True)
    assert not buttons.run.isEnabled() and buttons.cancel.isEnabled()


def test_model_folder_chosen_with_the_button_becomes_the_model(qtbot, monkeypatch, tmp_path):
    from napari_muvit.widgets import form
    from napari_muvit.widgets.model_panel import ModelPanel

    panel = ModelPanel()
    qtbot.addWidget(panel)
    assert panel.source.currentText() == "demo" and not panel.folder.isEnabled()
    monkeypatch.setattr(form.QFileDialog, "getExistingDirectory", lambda *a, **k: "")  # the dialog cancelled
    panel.browse.click()
    assert panel.source.currentText() == "demo" and panel.model_source() == "demo"
    monkeypatch.setattr(form.QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "m"))
    panel.browse.click()
    assert panel.source.currentText() == "folder" and panel.model_source() == str(tmp_path / "m")
    assert panel.folder.isEnabled() and panel.browse.text() == form.CHOOSE


def test_sections_below_the_fold_appear_one_per_event_loop_turn(qtbot):
    """`dock_layout(later=...)`: those sections are laid out after the others, hidden while the dock is added,
    then shown in order, one per turn of the event loop; one deleted before its turn is skipped."""
    from qtpy.QtWidgets import QApplication, QLabel, QWidget

    from napari_muvit.widgets.form import Section, dock_layout

    owner = QWidget()
    qtbot.addWidget(owner)
    first, a, b, c = Section("first"), Section("a"), Section("b"), QLabel("c")
    dock_layout(owner, [first], later=[a, b, c])
    owner.show()
    assert first.isVisible() and not any(w.isVisibleTo(owner) for w in (a, b, c))
    column = first.parentWidget().layout()
    assert [column.itemAt(i).widget() for i in range(4)] == [first, a, b, c]
    b.deleteLater()
    QApplication.sendPostedEvents(None, 0)  # b is deleted before its turn
    seen = []
    for _ in range(3):
        QApplication.processEvents()
        seen.append([w.isVisibleTo(owner) for w in (a, c)])
    assert seen[0] == [True, False]  # a first, alone
    assert seen[-1] == [True, True]
