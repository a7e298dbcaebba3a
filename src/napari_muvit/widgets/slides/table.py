"""The slide table: one row per slide (name, size, pixel size, format, output state)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QColor, QIcon, QImage, QPixmap
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

COLUMNS = ["slide", "size", "pixel", "format", "output"]
THUMB_PX = 48  # icon side in the table
MIN_WIDTH_PX = 500  # thumbnail + name, size, pixel, format and output columns side by side
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
        self.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.setMinimumWidth(MIN_WIDTH_PX)  # the dock opens wide enough to show every column
        self.cellClicked.connect(lambda row, _col: self.slide_clicked.emit(row))

    def set_slides(self, slides) -> None:
        self.setRowCount(0)  # a new listing: no thumbnail of the previous one stays
        self.setRowCount(len(slides))
        for r, info in enumerate(slides):
            self.set_row(r, info)

    def set_row(self, r: int, info) -> None:
        """Fill row ``r`` from ``info``; a thumbnail already shown in the row stays (a row is filled again when
        its output state changes, e.g. after a run)."""
        old = self.item(r, 0)
        icon = old.icon() if old is not None and old.text() == info.name else None
        texts = [info.name, info.size_text() or info.error, info.pixel_text() if not info.error else "",
                 info.format, info.state]
        for c, text in enumerate(texts):
            item = QTableWidgetItem(text)
            if c == 0 and icon is not None and not icon.isNull():
                item.setIcon(icon)
            item.setToolTip(str(info.path) if c == 0 else (info.error or str(info.store)) if c in (1, 4) else text)
            if c == 4 and STATE_COLOURS.get(info.state):
                item.setForeground(QColor(STATE_COLOURS[info.state]))
            if c == 1 and info.error:
                item.setForeground(QColor(STATE_COLOURS["unreadable"]))
            item.setTextAlignment(int(Qt.AlignLeft | Qt.AlignVCenter))
            self.setItem(r, c, item)

    def set_thumbnail(self, r: int, rgb) -> None:
        """Show ``rgb (h, w, 3) uint8`` as the slide's icon (None: no icon)."""
        item = self.item(r, 0)
        if item is None or rgb is None:
            return
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        image = QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()  # copy: Qt keeps its own pixels
        item.setIcon(QIcon(QPixmap.fromImage(image)))
        self.setRowHeight(r, max(self.rowHeight(r), THUMB_PX + 4))

    def cell_text(self, r: int, c: int) -> str:
        item = self.item(r, c)
        return item.text() if item is not None else ""
