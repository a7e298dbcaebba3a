"""The slide table: one row per slide (name, size, pixel size, format, output state)."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

COLUMNS = ["slide", "size", "pixel", "format", "output"]
STATE_COLOURS = {"none": None, "partial": "#d9a400", "complete": "#2e9e4f", "unreadable": "#c0392b"}


class SlideTable(QTableWidget):
    """Rows of `SlideInfo`; a click on a row emits ``slide_clicked(row)``."""

    slide_clicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.ExtendedSelection)  # several slides for a batch
        self.cellClicked.connect(lambda row, _col: self.slide_clicked.emit(row))

    def set_slides(self, slides) -> None:
        self.setRowCount(len(slides))
        for r, info in enumerate(slides):
            self.set_row(r, info)

    def set_row(self, r: int, info) -> None:
        texts = [info.name, info.size_text() or info.error, info.pixel_text() if not info.error else "",
                 info.format, info.state]
        for c, text in enumerate(texts):
            item = QTableWidgetItem(text)
            item.setToolTip(str(info.path) if c == 0 else (info.error or str(info.store)) if c in (1, 4) else text)
            if c == 4 and STATE_COLOURS.get(info.state):
                item.setForeground(QColor(STATE_COLOURS[info.state]))
            if c == 1 and info.error:
                item.setForeground(QColor(STATE_COLOURS["unreadable"]))
            item.setTextAlignment(int(Qt.AlignLeft | Qt.AlignVCenter))
            self.setItem(r, c, item)

    def cell_text(self, r: int, c: int) -> str:
        item = self.item(r, c)
        return item.text() if item is not None else ""
