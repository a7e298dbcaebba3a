"""Showing layers a step at a time, so the GUI never waits for all of them at once.

Each new layer holds napari 0.1-0.5 s and each update costs a repaint of the canvas (30-150 ms with
software OpenGL); the docks queue one step per layer (the predict dock: the empty placeholders at the start
of a run, the result layers and the ROI list at its end; the attention dock: its first probe's maps and
markers; the pre-train tab: its reconstructions) and `LayerSteps` runs one step per turn of the Qt event loop. ``drained`` fires after the last step of
the queue ran (the dock then gives Run back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from qtpy.QtCore import QObject, QTimer, Signal


class LayerSteps(QObject):
    """A queue of GUI steps (callables) run in order, one per event-loop turn (all at once: ``stepwise=False``)."""

    drained = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._steps: list[Callable[[], object]] = []
        self._scheduled = False

    @property
    def pending(self) -> int:
        """Steps queued and not run yet."""
        return len(self._steps)

    def queue(self, steps: Iterable[Callable[[], object]], stepwise: bool = True) -> None:
        self._steps.extend(steps)
        if not stepwise:
            while self._steps:
                self._steps.pop(0)()
        elif not self._scheduled:
            self._scheduled = True
            QTimer.singleShot(0, self._next)

    def _next(self) -> None:
        self._scheduled = False
        if not self._steps:
            return
        step = self._steps.pop(0)
        try:
            step()
        finally:  # a failing step does not stop the others
            if self._steps:
                self._scheduled = True
                QTimer.singleShot(0, self._next)
            else:
                self.drained.emit()
