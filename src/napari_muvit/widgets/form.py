"""The building blocks every dock is made of, so that one kind of control looks the same in every dock.

The docks are plain Qt (via qtpy). A dock is a column of titled `Section`s (a QGroupBox holding a
QFormLayout: one labelled row per setting) that scrolls, above a pinned part (`RunButtons` + `StatusLine`,
and a plot where a dock has one) that never scrolls away; `dock_layout` builds that column. Choosers that
Qt lacks are here too: `LayerPicker` (a viewer layer, by name), `PathEdit` (a folder or file, with a
"Choose…" button). Level tick boxes are `levels.LevelTicks`. Each dock sets its tooltips in one place with
`set_tips` (attribute name -> plain-words help).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

CHOOSE = "Choose…"  # the text of every folder/file picker's button


class Section(QGroupBox):
    """A titled group of settings: ``row("label", widget)`` adds a labelled row, ``add(widget)`` a full-width one."""

    def __init__(self, title: str, parent=None):
        super().__init__(title, parent)
        self.form = QFormLayout(self)

    def row(self, label: str, widget: QWidget) -> QWidget:
        self.form.addRow(label, widget)
        return widget

    def add(self, widget: QWidget) -> QWidget:
        self.form.addRow(widget)
        return widget


def side_by_side(*widgets: QWidget) -> QWidget:
    """Widgets in one row without margins (e.g. a checkbox and the button that goes with it)."""
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        lay.addWidget(w)
    return row


def label(text: str = "") -> QLabel:
    """A read-only line of text that wraps instead of widening the dock."""
    out = QLabel(text)
    out.setWordWrap(True)
    return out


def spin_box(value: int, minimum: int, maximum: int, step: int = 1) -> QSpinBox:
    """A whole-number setting."""
    box = QSpinBox()
    box.setRange(minimum, maximum)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def float_box(value: float, minimum: float, maximum: float, step: float, decimals: int = 6) -> QDoubleSpinBox:
    """A decimal setting, with enough decimals to show ``step``."""
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(minimum, maximum)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def combo(items, current=None) -> QComboBox:
    """A choice among fixed texts (``items`` shown as text), ``current`` chosen."""
    box = QComboBox()
    box.addItems([str(v) for v in items])
    if current is not None:
        box.setCurrentText(str(current))
    return box


class RunButtons(QWidget):
    """The start button (``run``, its text e.g. "Run" or "Start") beside ``cancel``; ``set_running`` swaps which
    one is enabled."""

    def __init__(self, run_text: str = "Run", parent=None):
        super().__init__(parent)
        self.run = QPushButton(run_text)
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.run)
        lay.addWidget(self.cancel)

    def set_running(self, running: bool) -> None:
        self.run.setEnabled(not running)
        self.cancel.setEnabled(running)


class StatusLine(QWidget):
    """What a job is doing: a wrapping line of text and, while a job reports counts, a progress bar under it.

    ``setText``/``text`` as a QLabel's (``value`` is the same text, for scripts); ``progress(done, total, text)``
    is the slot for a job's ``progressed`` signal; ``idle()`` hides the bar when the job has ended.
    """

    def __init__(self, text: str = "", parent=None):
        super().__init__(parent)
        self.label = label(text)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(8)
        self.bar.hide()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.label)
        lay.addWidget(self.bar)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name, so a StatusLine stands in for a QLabel)
        self.label.setText(text)

    def text(self) -> str:
        return self.label.text()

    @property
    def value(self) -> str:
        return self.text()

    @value.setter
    def value(self, text: str) -> None:
        self.setText(text)

    def progress(self, done: int, total: int, text: str | None = None) -> None:
        if text is not None:
            self.setText(text)
        if total and total > 0:
            self.bar.setRange(0, int(total))
            self.bar.setValue(min(int(done), int(total)))
            self.bar.show()

    def idle(self) -> None:
        self.bar.hide()

    def setToolTip(self, tip: str) -> None:  # noqa: N802
        super().setToolTip(tip)
        self.label.setToolTip(tip)


class LayerPicker(QComboBox):
    """The viewer's layers that ``layers()`` returns, by name; keeps its choice while layers come and go and
    takes the first layer offered when its choice goes away. ``value`` is the chosen layer (None: none);
    ``choices`` the layers offered. Emits ``currentTextChanged`` when the choice changes, never while refreshing."""

    def __init__(self, viewer, layers: Callable[[], list], parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self._layers = layers
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    @property
    def choices(self) -> list:
        return [_unwrapped(ly) for ly in self._layers()]

    @property
    def value(self):
        name = self.currentText()
        return _unwrapped(self.viewer.layers[name]) if name and name in self.viewer.layers else None

    @value.setter
    def value(self, layer) -> None:
        if layer is not None and layer.name not in [ly.name for ly in self.choices]:
            raise ValueError(f"the layer {layer.name!r} cannot be chosen here; choose one of "
                             f"{', '.join(repr(ly.name) for ly in self.choices) or 'none (no layer fits)'}.")
        self.refresh()
        self.setCurrentText("" if layer is None else layer.name)

    def refresh(self, *_) -> None:
        before = self.currentText()
        names = [ly.name for ly in self._layers()]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if before in names:
            self.setCurrentText(before)
        self.blockSignals(False)
        if self.currentText() != before:
            self.currentTextChanged.emit(self.currentText())


def _unwrapped(layer):
    """The layer itself: a plugin dock gets the viewer behind napari's public-only proxy, whose layers are
    proxies too; the layer pickers hand out the layers the viewer holds (``is`` holds)."""
    return getattr(layer, "__wrapped__", layer)


class PathEdit(QWidget):
    """A folder or file path typed or chosen with the "Choose…" button (``mode``: ``"folder"``, ``"file"`` to
    open, ``"save"`` to write). ``value`` is the text (``""``: none chosen); ``changed(text)`` fires when the
    typing ends, a path is chosen, or ``value`` is set to another path."""

    changed = Signal(str)

    def __init__(self, mode: str = "folder", value: str = "", placeholder: str = "", filter: str = "", parent=None):
        super().__init__(parent)
        if mode not in ("folder", "file", "save"):
            raise ValueError(f"PathEdit mode {mode!r} is not one of 'folder', 'file', 'save'.")
        self.mode, self.filter = mode, filter
        self.edit = QLineEdit(str(value))
        self.edit.setPlaceholderText(placeholder)
        self.button = QPushButton(CHOOSE)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit)
        lay.addWidget(self.button)
        self._last = self.value
        self.edit.editingFinished.connect(self._emit_if_new)
        self.button.clicked.connect(self._choose)

    @property
    def value(self) -> str:
        return self.edit.text().strip()

    @value.setter
    def value(self, text) -> None:
        self.edit.setText("" if text is None else str(text))
        self._emit_if_new()

    def path(self) -> Path | None:
        return Path(self.value) if self.value else None

    def setToolTip(self, tip: str) -> None:  # noqa: N802
        super().setToolTip(tip)
        self.edit.setToolTip(tip)
        self.button.setToolTip(tip)

    def _emit_if_new(self) -> None:
        if self.value != self._last:
            self._last = self.value
            self.changed.emit(self.value)

    def _choose(self) -> None:
        if self.mode == "folder":
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.value)
        elif self.mode == "file":
            path, _ = QFileDialog.getOpenFileName(self, "Choose a file", self.value, self.filter)
        else:
            path, _ = QFileDialog.getSaveFileName(self, "Save to", self.value, self.filter)
        if path:
            self.value = path


def set_tips(owner, tips: dict[str, str]) -> None:
    """Set each ``owner.<name>`` widget's tooltip from ``tips`` (one place per dock for its help texts)."""
    for name, tip in tips.items():
        getattr(owner, name).setToolTip(tip)


def dock_layout(owner: QWidget, sections: Iterable[QWidget], pinned: Iterable[QWidget] = (),
                scroll: bool = True, later: Iterable[QWidget] = ()) -> QScrollArea | None:
    """Lay ``owner`` out as a dock: ``sections`` in a column (in a vertical scroll area when ``scroll``; spare
    height below them), then ``pinned`` widgets, always on screen (Run, Cancel, the status line, a plot).

    ``later``: sections below the fold, placed after ``sections`` but shown one per event-loop turn once
    the dock is up (`reveal_later`): Qt styles a widget and all its children when it is first shown, and
    for a dock of a few hundred controls that, done at once inside napari's ``add_dock_widget``, held the
    viewer for 0.2-0.4 s on a small machine."""
    later = list(later)
    inner = QWidget() if scroll else owner
    col = QVBoxLayout(inner)
    for w in [*sections, *later]:
        col.addWidget(w)
    reveal_later(later)
    if not scroll:
        for w in pinned:
            col.addWidget(w)
        return None
    col.addStretch(1)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # labels wrap instead
    area.setWidget(inner)
    outer = QVBoxLayout(owner)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area, 1)
    for w in pinned:
        outer.addWidget(w)
    return area


def reveal_later(widgets: Iterable[QWidget]) -> None:
    """Hide ``widgets`` now and show them one per event-loop turn, in order (the first turn comes after the
    caller, e.g. napari adding the dock, has returned)."""
    pending = list(widgets)
    for w in pending:
        w.setVisible(False)  # not hide()/show(): a panel may define show() for its own content

    def step():
        while pending:
            w = pending.pop(0)
            try:
                w.setVisible(True)
            except RuntimeError:  # the dock was closed and deleted before its turn
                continue
            break
        if pending:
            QTimer.singleShot(0, step)

    if pending:
        QTimer.singleShot(0, step)
