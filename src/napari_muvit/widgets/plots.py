"""Small matplotlib plots that dock inside napari: attention share per level and live training curves.

Both are plain Qt widgets (a `FigureCanvasQTAgg` in a layout) so they can sit in a dock widget or in a
magicgui `Container`'s native layout. They only draw what they are given; they compute nothing.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

# napari's default dark theme, so the plot does not flash white inside the viewer
_BACKGROUND = "#262930"
_FOREGROUND = "#d6d0ce"
_COLORS = ("#5ab4ff", "#ffb000", "#7fd17f", "#ff6f6f", "#c08cff", "#9aa0a6")


class _Canvas(QWidget):
    """A matplotlib figure with one axes, styled for napari's dark theme."""

    def __init__(self, parent: QWidget | None = None, height_px: int = 180):
        super().__init__(parent)
        self.figure = Figure(figsize=(3.2, 1.8), dpi=100, facecolor=_BACKGROUND, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(height_px)
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.axes = self.figure.add_subplot(1, 1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self._style()

    def _style(self) -> None:
        ax = self.axes
        ax.set_facecolor(_BACKGROUND)
        ax.tick_params(colors=_FOREGROUND, labelsize=7)
        for spine in ax.spines.values():
            spine.set_color(_FOREGROUND)
        ax.xaxis.label.set_color(_FOREGROUND)
        ax.yaxis.label.set_color(_FOREGROUND)
        ax.title.set_color(_FOREGROUND)

    def _legend(self) -> None:
        legend = self.axes.legend(fontsize=7, frameon=False, loc="best")
        for text in legend.get_texts():
            text.set_color(_FOREGROUND)


class LevelSharePlot(_Canvas):
    """Bar chart of the share of attention each level receives.

    Two bars per level: the clicked query token, and the average over every query token of the tile.
    `shares` holds what is drawn: `{"query": (L,), "tile": (L,)}` fractions in [0, 1].
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.levels: tuple[int, ...] = ()
        self.shares: dict[str, np.ndarray] = {}
        self.clear()

    def clear(self) -> None:
        self.levels, self.shares = (), {}
        ax = self.axes
        ax.clear()
        self._style()
        ax.set_title("attention share per level", fontsize=8)
        ax.text(0.5, 0.5, "click the image", ha="center", va="center", color=_FOREGROUND,
                fontsize=8, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        self.canvas.draw_idle()

    def set_shares(self, levels, query_share, tile_share=None) -> None:
        """Draw the shares; `levels` (L,) downsample factors, shares (L,) fractions summing to ~1."""
        levels = tuple(int(v) for v in levels)
        query = np.asarray(query_share, dtype=float).reshape(-1)
        if query.shape[0] != len(levels):
            raise ValueError(f"Got {query.shape[0]} attention shares for {len(levels)} levels {levels}.")
        self.levels = levels
        self.shares = {"query": query}
        if tile_share is not None:
            self.shares["tile"] = np.asarray(tile_share, dtype=float).reshape(-1)
        ax = self.axes
        ax.clear()
        self._style()
        x = np.arange(len(levels))
        width = 0.8 / len(self.shares)
        labels = {"query": "this query", "tile": "tile average"}
        for i, (key, values) in enumerate(self.shares.items()):
            ax.bar(x + (i - (len(self.shares) - 1) / 2) * width, values, width, color=_COLORS[i],
                   label=labels[key])
        ax.set_xticks(x, [f"level {v}" for v in levels])
        ax.set_ylim(0, 1)
        ax.set_ylabel("share", fontsize=7)
        ax.set_title("attention share per level", fontsize=8)
        self._legend()
        self.canvas.draw_idle()


class CurvePlot(_Canvas):
    """Live line plot of training curves (loss, metrics) against step or epoch.

    `append(name, x, y)` adds a point; redraws are coalesced to at most one per `redraw_ms` so a fast
    training loop cannot flood the GUI thread. `series[name]` = `(xs, ys)` lists of what was received.
    Series whose name starts with "val" or a metric name go on a second y axis in [0, 1].
    """

    def __init__(self, parent: QWidget | None = None, xlabel: str = "step", redraw_ms: int = 250,
                 right_axis: tuple[str, ...] = ()):
        super().__init__(parent)
        self.xlabel = xlabel
        self.right_axis = tuple(right_axis)
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self._right = None
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
        ax = self.axes
        ax.clear()
        if self._right is not None:
            self._right.remove()
            self._right = None
        self._style()
        ax.set_xlabel(self.xlabel, fontsize=7)
        if not self.series:
            ax.text(0.5, 0.5, "no training yet", ha="center", va="center", color=_FOREGROUND,
                    fontsize=8, transform=ax.transAxes)
        handles = []
        for i, (name, (xs, ys)) in enumerate(self.series.items()):
            target = ax
            if name in self.right_axis:
                if self._right is None:
                    self._right = ax.twinx()
                    self._right.set_ylim(0, 1)
                    self._right.tick_params(colors=_FOREGROUND, labelsize=7)
                target = self._right
            (line,) = target.plot(xs, ys, color=_COLORS[i % len(_COLORS)], lw=1.2,
                                  marker="." if len(xs) < 30 else None, label=name)
            handles.append(line)
        if handles:
            legend = ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper right")
            for text in legend.get_texts():
                text.set_color(_FOREGROUND)
        self.canvas.draw_idle()
