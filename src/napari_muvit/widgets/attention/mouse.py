"""Mouse wiring of the attention probe: a click (not a drag) probes, Shift-hover follows the cursor."""

from __future__ import annotations

import numpy as np

CLICK_MAX_MOVE_PX = 3  # screen px a press may move and still count as a click, not a pan


class ProbeMouse:
    """Viewer mouse callbacks that call `probe_at(napari world position)` on a click or a Shift-hover.

    `on_click` / `hover` are the dock's check boxes, read at event time; a drag stays napari's pan and a
    click in a layer's painting/drawing mode is left to that layer.
    """

    def __init__(self, viewer, on_click, hover, probe_at):
        self.on_click, self.hover, self.probe_at = on_click, hover, probe_at
        viewer.mouse_drag_callbacks.append(self.on_mouse_drag)
        viewer.mouse_move_callbacks.append(self.on_mouse_move)

    def on_mouse_drag(self, viewer, event):
        """A click without a drag probes; a drag stays napari's pan."""
        if not self.on_click.isChecked() or event.button not in (None, 1):
            return
        active = viewer.layers.selection.active
        if getattr(active, "mode", "pan_zoom") != "pan_zoom":  # painting, drawing, selecting: not a probe
            return
        start = np.asarray(event.pos, dtype=float)
        position = tuple(event.position)
        yield
        moved = 0.0
        while event.type == "mouse_move":
            moved = max(moved, float(np.abs(np.asarray(event.pos, dtype=float) - start).max()))
            yield
        if moved <= CLICK_MAX_MOVE_PX:
            self.probe_at(position)

    def on_mouse_move(self, viewer, event):
        if self.hover.isChecked() and "Shift" in event.modifiers:
            self.probe_at(tuple(event.position))
