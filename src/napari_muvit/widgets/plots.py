"""Small charts that dock inside napari: attention share per level, live training curves, class areas.

Each is a widget painted with QPainter on the GUI thread: a few bars or a few hundred line points take a
millisecond or two to paint. They used to be matplotlib figures rendered on a background thread, which
kept the drawing off the GUI thread but not the interpreter lock: importing matplotlib (~0.5 s of CPU) and
each draw (30-200 ms) held the lock the GUI thread needs for every Qt callback into Python, so the viewer
stalled when a dock with a chart opened (0.6 s for the predict dock), at the first attention click and
while training curves updated. An empty chart shows one line of text (`show_message`).
The charts draw what they are given; they compute nothing. What the last paint drew is kept in
``drawn`` (name -> rectangles or point counts), for tests and for anyone asking what is on screen.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

# napari's default dark theme, so the chart does not flash white inside the viewer
_BACKGROUND = "#262930"
_FOREGROUND = "#d6d0ce"
_COLORS = ("#5ab4ff", "#ffb000", "#7fd17f", "#ff6f6f", "#c08cff", "#9aa0a6")


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 12) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}"


class _Chart(QWidget):
    """Base of the charts: background, message, axes frame and text in the napari theme."""

    def __init__(self, parent=None, height_px: int = 190):
        super().__init__(parent)
        self.setMinimumHeight(height_px)
        self.setMinimumWidth(200)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.message = ""  # shown instead of a chart while there is nothing to draw
        self.paints = 0
        self.drawn: dict = {}

    def show_message(self, text: str) -> None:
        """Show ``text`` instead of a chart."""
        self.message = text
        self.update()

    def _show_chart(self) -> None:
        self.message = ""
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.Antialiasing)
            painter.fillRect(self.rect(), QColor(_BACKGROUND))
            font = QFont(painter.font())
            font.setPointSizeF(7.5)
            painter.setFont(font)
            painter.setPen(QColor(_FOREGROUND))
            self.drawn = {}
            if self.message:
                painter.drawText(QRectF(self.rect()), Qt.AlignCenter | Qt.TextWordWrap, self.message)
            else:
                self.draw(painter, QRectF(self.rect()))
        finally:
            painter.end()
        self.paints += 1

    def draw(self, painter: QPainter, rect: QRectF) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- shared pieces ------------------------------------------------------------------------
    @staticmethod
    def _frame(rect: QRectF, left=44.0, right=12.0, top=18.0, bottom=26.0) -> QRectF:
        return QRectF(rect.left() + left, rect.top() + top, max(rect.width() - left - right, 10.0),
                      max(rect.height() - top - bottom, 10.0))

    @staticmethod
    def _y_axis(painter: QPainter, area: QRectF, lo: float, hi: float, side: str = "left") -> None:
        """Ticks and labels of a value axis ``[lo, hi]`` on the ``side`` of ``area``."""
        x = area.left() if side == "left" else area.right()
        painter.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
        for v in nice_ticks(lo, hi):
            y = area.bottom() - (v - lo) / (hi - lo) * area.height() if hi > lo else area.bottom()
            if side == "left":
                painter.drawLine(QPointF(x - 3, y), QPointF(x, y))
                painter.drawText(QRectF(x - 44, y - 7, 40, 14), Qt.AlignRight | Qt.AlignVCenter, _label(v))
            else:
                painter.drawLine(QPointF(x, y), QPointF(x + 3, y))
                painter.drawText(QRectF(x + 4, y - 7, 40, 14), Qt.AlignLeft | Qt.AlignVCenter, _label(v))

    @staticmethod
    def _legend(painter: QPainter, area: QRectF, entries: list[tuple[str, str]]) -> None:
        """Colour boxes and names, top right inside ``area``."""
        metrics = painter.fontMetrics()
        width = max((metrics.horizontalAdvance(name) for name, _ in entries), default=0) + 16
        y = area.top() + 2
        for name, color in entries:
            x = area.right() - width - 2
            painter.fillRect(QRectF(x, y + 3, 8, 8), QColor(color))
            painter.drawText(QRectF(x + 12, y, width, 14), Qt.AlignLeft | Qt.AlignVCenter, name)
            y += 14


class LevelSharePlot(_Chart):
    """Bar chart of the share of attention each level receives.

    Two bars per level: the clicked query token, and the average over every query token of the tile.
    `shares` holds what is drawn: `{"query": (L,), "tile": (L,)}` fractions in [0, 1].
    """

    LABELS = {"query": "this query", "tile": "tile average"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self.levels: tuple[int, ...] = ()
        self.shares: dict[str, np.ndarray] = {}
        self.clear()

    def clear(self) -> None:
        self.levels, self.shares = (), {}
        self.show_message("attention share per level: click the image")

    def set_shares(self, levels, query_share, tile_share=None) -> None:
        """Draw the shares; `levels` (L,) downsample factors, shares (L,) fractions summing to ~1."""
        levels = tuple(int(v) for v in levels)
        query = np.asarray(query_share, dtype=float).reshape(-1)
        if query.shape[0] != len(levels):
            raise ValueError(f"Got {query.shape[0]} attention shares for {len(levels)} levels {levels}.")
        shares = {"query": query}
        if tile_share is not None:
            shares["tile"] = np.asarray(tile_share, dtype=float).reshape(-1)
        self.levels, self.shares = levels, shares
        if not levels:
            self.clear()
            return
        self._show_chart()

    def draw(self, painter: QPainter, rect: QRectF) -> None:
        painter.drawText(QRectF(rect.left(), rect.top() + 2, rect.width(), 14), Qt.AlignHCenter,
                         "attention share per level")
        area = self._frame(rect)
        self._y_axis(painter, area, 0.0, 1.0)
        painter.drawLine(area.bottomLeft(), area.bottomRight())
        slot = area.width() / len(self.levels)
        width = 0.8 * slot / len(self.shares)
        bars = []
        for i, (key, values) in enumerate(self.shares.items()):
            for k, value in enumerate(values):
                h = float(np.clip(value, 0.0, 1.0)) * area.height()
                x = area.left() + (k + 0.1) * slot + i * width
                bar = QRectF(x, area.bottom() - h, width, h)
                painter.fillRect(bar, QColor(_COLORS[i]))
                bars.append((key, self.levels[k], bar))
        for k, level in enumerate(self.levels):
            painter.drawText(QRectF(area.left() + k * slot, area.bottom() + 2, slot, 14), Qt.AlignHCenter,
                             f"x{level}")
        self._legend(painter, area, [(self.LABELS[key], _COLORS[i]) for i, key in enumerate(self.shares)])
        self.drawn = {"bars": bars, "area": area}


class CurvePlot(_Chart):
    """Live line plot of training curves (loss, metrics) against step or epoch.

    `append(name, x, y)` adds a point; repaints are coalesced to at most one per `redraw_ms`.
    `series[name]` = `(xs, ys)` lists of what was received. Series named in `right_axis` (metrics in
    [0, 1]) go on a second y axis from 0 to 1.
    """

    def __init__(self, parent=None, xlabel: str = "step", redraw_ms: int = 500, right_axis: tuple[str, ...] = ()):
        super().__init__(parent)
        self.xlabel = xlabel
        self.right_axis = tuple(right_axis)
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(redraw_ms)
        self._timer.timeout.connect(self.redraw)
        self.redraw()

    def reset(self) -> None:
        self.series = {}
        self.redraw()

    def append(self, name: str, x: float, y: float) -> None:
        if y is None or not math.isfinite(float(y)):
            return
        xs, ys = self.series.setdefault(name, ([], []))
        xs.append(float(x))
        ys.append(float(y))
        if not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        if not self.series:
            self.show_message("no training yet")
        else:
            self._show_chart()

    def draw(self, painter: QPainter, rect: QRectF) -> None:
        right = [n for n in self.series if n in self.right_axis]
        left = [n for n in self.series if n not in self.right_axis]
        area = self._frame(rect, right=40.0 if right else 12.0)
        all_x = [x for xs, _ in self.series.values() for x in xs]
        x0, x1 = min(all_x), max(all_x)
        if x1 <= x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        left_y = [y for n in left for y in self.series[n][1]]
        lo, hi = (min(left_y), max(left_y)) if left_y else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        if left:
            self._y_axis(painter, area, lo, hi, "left")
        if right:
            self._y_axis(painter, area, 0.0, 1.0, "right")
        painter.drawLine(area.bottomLeft(), area.bottomRight())
        for v in nice_ticks(x0, x1):
            x = area.left() + (v - x0) / (x1 - x0) * area.width()
            painter.drawText(QRectF(x - 20, area.bottom() + 2, 40, 12), Qt.AlignHCenter, _label(v))
        painter.drawText(QRectF(area.left(), area.bottom() + 12, area.width(), 12), Qt.AlignHCenter, self.xlabel)
        drawn, legend = {}, []
        for i, (name, (xs, ys)) in enumerate(self.series.items()):
            color = _COLORS[i % len(_COLORS)]
            ylo, yhi = (0.0, 1.0) if name in self.right_axis else (lo, hi)
            path = QPainterPath()
            for k, (x, y) in enumerate(zip(xs, ys)):
                point = QPointF(area.left() + (x - x0) / (x1 - x0) * area.width(),
                                area.bottom() - (y - ylo) / (yhi - ylo) * area.height())
                if k == 0:
                    path.moveTo(point)
                else:
                    path.lineTo(point)
                if len(xs) < 30:
                    painter.fillRect(QRectF(point.x() - 1.5, point.y() - 1.5, 3, 3), QColor(color))
            painter.setPen(QPen(QColor(color), 1.2))
            painter.drawPath(path)
            drawn[name] = ("right" if name in self.right_axis else "left", len(xs))
            legend.append((name, color))
        painter.setPen(QColor(_FOREGROUND))
        self._legend(painter, area, legend)
        self.drawn = {"series": drawn, "area": area, "left_range": (lo, hi)}


class BarPlot(_Chart):
    """Horizontal bars, one per name (e.g. the area of each class). `set_bars(names, values, xlabel)`;
    `bars` = the `(name, value)` pairs drawn, in order (top to bottom)."""

    def __init__(self, parent=None, height_px: int = 150, empty: str = "nothing measured yet"):
        super().__init__(parent, height_px)
        self.empty = empty
        self.xlabel = ""
        self.bars: list[tuple[str, float]] = []
        self.show_message(empty)

    def set_bars(self, names, values, xlabel: str) -> None:
        self.bars = [(str(n), float(v)) for n, v in zip(names, values)]
        self.xlabel = xlabel
        if not self.bars:
            self.show_message(self.empty)
        else:
            self._show_chart()

    def draw(self, painter: QPainter, rect: QRectF) -> None:
        metrics = painter.fontMetrics()
        name_w = min(max(metrics.horizontalAdvance(n) for n, _ in self.bars) + 8, rect.width() * 0.45)
        area = self._frame(rect, left=name_w, top=6.0)
        top = max(max(v for _, v in self.bars), 0.0) or 1.0
        painter.drawLine(area.topLeft(), area.bottomLeft())
        row = area.height() / len(self.bars)
        rects = []
        for k, (name, value) in enumerate(self.bars):
            w = max(value, 0.0) / top * area.width()
            bar = QRectF(area.left(), area.top() + (k + 0.15) * row, w, 0.7 * row)
            painter.fillRect(bar, QColor(_COLORS[0]))
            painter.drawText(QRectF(rect.left(), bar.top(), name_w - 4, bar.height()),
                             Qt.AlignRight | Qt.AlignVCenter, metrics.elidedText(name, Qt.ElideRight, int(name_w - 4)))
            rects.append((name, value, bar))
        for v in nice_ticks(0.0, top, 3):
            x = area.left() + v / top * area.width()
            painter.drawText(QRectF(x - 24, area.bottom() + 1, 48, 12), Qt.AlignHCenter, _label(v))
        painter.drawText(QRectF(area.left(), area.bottom() + 12, area.width(), 12), Qt.AlignHCenter, self.xlabel)
        self.drawn = {"bars": rects, "area": area}
