"""Small matplotlib plots that dock inside napari: attention share per level and live training curves.

Drawing a matplotlib figure costs 50-200 ms of Python on a busy CPU, too long for the GUI thread while a
model trains or the user clicks through attention maps. So each plot renders its figure with the Agg
backend on a background thread and the GUI thread only swaps in the finished picture (a QImage in a
QLabel). Requests that arrive during a render are coalesced: the next render draws the latest data.
matplotlib itself is imported by the first render, on that thread: its import takes 0.6-2 s, which
froze the GUI while a dock with a plot opened. An empty plot is only a line of text (`show_message`), never
a render: a render thread importing matplotlib while a dock opens holds the interpreter lock, and the
GUI thread, which needs it for every Qt callback into Python, waited for it (the predict dock opened in
0.6-0.76 s with its empty chart rendered, 0.11-0.15 s without).
The plots draw what they are given; they compute nothing.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# napari's default dark theme, so the plot does not flash white inside the viewer
_BACKGROUND = "#262930"
_FOREGROUND = "#d6d0ce"
_COLORS = ("#5ab4ff", "#ffb000", "#7fd17f", "#ff6f6f", "#c08cff", "#9aa0a6")


class _Bridge(QObject):
    rendered = Signal(object)  # (bytes RGBA, width, height), delivered on the GUI thread


class _BackgroundPlot(QLabel):
    """A QLabel showing a figure rendered off the GUI thread. Subclasses implement `draw(figure, state)`.

    `state` is a plain snapshot of the data taken on the GUI thread; `draw` runs on the render thread and
    must only read it. `renders` counts finished renders; `idle` is True when nothing is pending.
    """

    def __init__(self, parent=None, height_px: int = 190):
        super().__init__(parent)
        self.setMinimumHeight(height_px)
        self.setMinimumWidth(200)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.setAlignment(Qt.AlignCenter)
        self.setStyleSheet(f"background-color: {_BACKGROUND}; color: {_FOREGROUND};")
        self.height_px = height_px
        self.figure: Figure | None = None  # made by the first render, on the render thread
        self.renders = 0
        self._lock = threading.Lock()
        self._busy = False
        self._pending = None
        self._generation = 0  # bumped by `show_message`: a render asked for before it is not shown
        self._bridge = _Bridge()
        self._bridge.rendered.connect(self._show)

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._busy and self._pending is None

    def request(self, state) -> None:
        """Render `state` soon (GUI thread); a request arriving mid-render replaces the queued one."""
        width = max(240, self.width())
        with self._lock:
            self._pending = (state, width, self.height_px, self._generation)
            if self._busy:
                return
            self._busy = True
        threading.Thread(target=self._render_loop, name="muvit-plot", daemon=True).start()

    def _render_loop(self) -> None:
        while True:
            with self._lock:
                job, self._pending = self._pending, None
                if job is None:
                    self._busy = False
                    return
            state, width, height, generation = job
            try:
                if self.figure is None:
                    self.figure = _new_figure()
                self.figure.clear()
                self.figure.set_size_inches(width / 100, height / 100)
                self.draw(self.figure, state)
                self.figure.canvas.draw()
                buffer = self.figure.canvas.buffer_rgba()
                image = (bytes(buffer), buffer.shape[1], buffer.shape[0], generation)
            except Exception:  # noqa: BLE001 - a plot must never take the widget down
                import logging

                logging.getLogger(__name__).exception("plot rendering failed")
                continue
            try:
                self._bridge.rendered.emit(image)
            except RuntimeError:  # the widget was closed while rendering: nothing to show it on
                with self._lock:
                    self._busy, self._pending = False, None
                return

    def show_message(self, text: str) -> None:
        """Show ``text`` instead of a figure (no render, so no matplotlib); a render still running is dropped."""
        with self._lock:
            self._generation += 1
            self._pending = None
        QLabel.clear(self)  # the picture (a subclass may define its own clear())
        self.setText(text)

    def _show(self, image) -> None:
        data, width, height, generation = image
        if generation != self._generation:
            return  # asked for before a message replaced it
        qimage = QImage(data, width, height, 4 * width, QImage.Format_RGBA8888)
        self.setPixmap(QPixmap.fromImage(qimage.copy()))  # copy: `data` is freed after this slot
        self.renders += 1

    def draw(self, figure: Figure, state) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _new_figure() -> Figure:
    """A figure with the Agg canvas (render thread: matplotlib is imported here, never on the GUI thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(dpi=100, facecolor=_BACKGROUND)
    FigureCanvasAgg(figure)
    return figure


def _styled_axes(figure: Figure, right: float = 0.97):
    figure.subplots_adjust(left=0.15, right=right, top=0.87, bottom=0.2)  # fixed: no per-draw layout pass
    ax = figure.add_subplot(1, 1, 1)
    _style(ax)
    return ax


def _style(ax) -> None:
    ax.set_facecolor(_BACKGROUND)
    ax.tick_params(colors=_FOREGROUND, labelsize=7)
    for spine in ax.spines.values():
        spine.set_color(_FOREGROUND)
    ax.xaxis.label.set_color(_FOREGROUND)
    ax.yaxis.label.set_color(_FOREGROUND)


def _legend(ax, handles=None) -> None:
    legend = ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper right")
    for text in legend.get_texts():
        text.set_color(_FOREGROUND)


class LevelSharePlot(_BackgroundPlot):
    """Bar chart of the share of attention each level receives.

    Two bars per level: the clicked query token, and the average over every query token of the tile.
    `shares` holds what is drawn: `{"query": (L,), "tile": (L,)}` fractions in [0, 1].
    """

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
        self.request((levels, dict(shares)))

    def draw(self, figure: Figure, state) -> None:
        levels, shares = state
        ax = _styled_axes(figure)
        ax.set_title("attention share per level", fontsize=8, color=_FOREGROUND)
        x = np.arange(len(levels))
        width = 0.8 / len(shares)
        labels = {"query": "this query", "tile": "tile average"}
        for i, (key, values) in enumerate(shares.items()):
            ax.bar(x + (i - (len(shares) - 1) / 2) * width, values, width, color=_COLORS[i], label=labels[key])
        ax.set_xticks(x, [f"x{v}" for v in levels])
        ax.set_ylim(0, 1)
        ax.set_ylabel("share", fontsize=7)
        _legend(ax)


class CurvePlot(_BackgroundPlot):
    """Live line plot of training curves (loss, metrics) against step or epoch.

    `append(name, x, y)` adds a point; renders are coalesced to at most one per `redraw_ms`.
    `series[name]` = `(xs, ys)` lists of what was received. Series named in `right_axis` (metrics in
    [0, 1]) go on a second y axis.
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
            return
        snapshot = {name: (list(xs), list(ys)) for name, (xs, ys) in self.series.items()}
        self.request(snapshot)

    def draw(self, figure: Figure, series) -> None:
        has_right = any(name in self.right_axis for name in series)
        ax = _styled_axes(figure, right=0.87 if has_right else 0.97)
        ax.set_xlabel(self.xlabel, fontsize=7)
        right = None
        handles = []
        for i, (name, (xs, ys)) in enumerate(series.items()):
            target = ax
            if name in self.right_axis:
                if right is None:
                    right = ax.twinx()
                    right.set_ylim(0, 1)
                    _style(right)
                target = right
            (line,) = target.plot(xs, ys, color=_COLORS[i % len(_COLORS)], lw=1.2,
                                  marker="." if len(xs) < 30 else None, label=name)
            handles.append(line)
        _legend(ax, handles)


class BarPlot(_BackgroundPlot):
    """Horizontal bars, one per name (e.g. the area of each class). `set_bars(names, values, xlabel)`;
    `bars` = the `(name, value)` pairs drawn, in order (top to bottom)."""

    def __init__(self, parent=None, height_px: int = 150, empty: str = "nothing measured yet"):
        super().__init__(parent, height_px)
        self.empty = empty
        self.bars: list[tuple[str, float]] = []
        self.show_message(empty)

    def set_bars(self, names, values, xlabel: str) -> None:
        self.bars = list(zip(names, values))
        if not self.bars:
            self.show_message(self.empty)
            return
        self.request((tuple(names), tuple(float(v) for v in values), xlabel))

    def draw(self, figure: Figure, state) -> None:
        names, values, xlabel = state
        ax = figure.add_axes((0.42, 0.2, 0.55, 0.75))
        _style(ax)
        ax.barh(range(len(names)), values, color=_COLORS[0])
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel, fontsize=7)
