"""The attention probe dock widget: click the slide, see where that token looks at every level.

The engine computes (`napari_muvit.engine.attention_probe` on a per-tile cache session, run as the job
`engine.attention_jobs.probe_job`); the dock runs it in the probe's worker process for images from a file,
in a thread for in-memory ones (`worker`), draws the result (`overlay`) and a level-share plot.
A click that arrives while a probe runs replaces the pending one, so hovering never queues up.
"""

from __future__ import annotations

import time

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QCheckBox, QPushButton, QWidget

from napari_muvit.engine.scratch_folder import ScratchFolder
from napari_muvit.widgets.attention.feature_view import start_feature_view
from napari_muvit.widgets.attention.mouse import ProbeMouse
from napari_muvit.widgets.attention.overlay import (
    AttentionOverlay,
    ProbeView,
)
from napari_muvit.widgets.attention.worker import PROBE_PROCESS, probe_job_for, probe_request, probe_view
from napari_muvit.widgets.engine_process import warm_when_shown
from napari_muvit.widgets.form import (
    LayerPicker,
    PathEdit,
    Section,
    StatusLine,
    combo,
    dock_layout,
    label,
    set_tips,
    side_by_side,
)
from napari_muvit.widgets.image_layers import image_layers_of, image_pixel_size, image_source
from napari_muvit.widgets.layer_steps import LayerSteps
from napari_muvit.widgets.levels import LevelTicks
from napari_muvit.widgets.model_panel import read_model_info
from napari_muvit.widgets.plots import LevelSharePlot


def _model_levels(source: str) -> tuple[int, ...]:
    """The levels a model was built for (its card/config; no torch)."""
    return read_model_info(source).levels


TIPS = {  # control attribute -> plain-words help
    "_image": "The slide to probe: click on it to ask where the model looks from there.",
    "_model": "'demo' (the small built-in model) or a model folder (config.yaml + model.pth, e.g. one saved by "
              "the Teach dock).",
    "_levels": "The resolutions the model looks at together, offered from the model: x1 is full resolution, x16 "
               "sees 16 times more tissue, 16 times coarser. Untick a level to probe without it.",
    "_layer": "Which attention to show. The model is a stack of transformer layers, each mixing information "
              "between image patches: a number picks one layer, 'last' the final one, 'rollout' multiplies all "
              "layers together (where information reached the clicked patch from, over the whole stack).",
    "_head": "Each layer has several attention heads that look for different things; 'mean' averages them, a "
             "number shows one head.",
    "_query_level": "The query is the patch under the click, taken from this level's view: x1 asks from the fine "
                    "detail, a coarser level from its context.",
    "_shared": "On: colours compare across levels (one maximum). Off: each level's map is stretched to its own "
               "maximum, which shows its pattern but not how much attention that level gets.",
    "_on_click": "Probe where you click (a drag still pans the view).",
    "_hover": "While Shift is held, probe under the moving cursor.",
    "_feature_btn": "Colour the current view by the model's features (3 main components as red, green, blue): "
                    "similar tissue gets similar colours.",
    "_clear_btn": "Remove the attention maps and markers.",
    "_status": "What the probe is doing, and how long the last one took.",
    "_legend": "How to read the attention maps' colours.",
}


class AttentionProbeWidget(QWidget):
    """Dock widget: click (or Shift-hover) on an image to probe the model's cross-scale attention."""

    def __init__(self, napari_viewer, parent=None, use_process: bool = True):
        super().__init__(parent)
        viewer = self.viewer = napari_viewer  # napari passes the viewer by this parameter name
        self.use_process = use_process  # file-backed images are probed in the probe's worker process
        self.overlay = AttentionOverlay(viewer)
        self._image = LayerPicker(viewer, lambda: image_layers_of(viewer))
        self._model = PathEdit("folder", value="demo", placeholder="demo, or a model folder")
        self._levels = LevelTicks(_model_levels("demo"),
                                  box_tip="Let the model see the slide {f} times coarser than full resolution (x1); "
                                          "the maps show where the clicked patch looks at this level.")
        self._layer = combo(["last", "rollout"])
        self._head = combo(["mean"])
        self._query_level = combo([1])
        self._shared = QCheckBox("same colour scale for all levels")
        self._shared.setChecked(True)
        self._on_click = QCheckBox("probe on click")
        self._on_click.setChecked(True)
        self._hover = QCheckBox("follow the cursor while Shift is held")
        self._feature_btn = QPushButton("Feature view (PCA-RGB)")
        self._clear_btn = QPushButton("Clear attention layers")
        self._status = StatusLine("Click the image to probe.")
        self._legend = label()
        self.plot = LevelSharePlot()
        set_tips(self, TIPS)
        what = Section("Image and model")
        what.row("image", self._image)
        what.row("model", self._model)
        what.row("levels", self._levels)
        attention = Section("Attention")
        attention.row("layer", self._layer)
        attention.row("head", self._head)
        attention.row("query level", self._query_level)
        attention.add(self._shared)
        mouse = Section("Mouse")
        mouse.add(self._on_click)
        mouse.add(self._hover)
        probe = Section("Probe")
        for w in (side_by_side(self._feature_btn, self._clear_btn), self._status, self._legend, self.plot):
            probe.add(w)
        dock_layout(self, [what, attention, mouse], [probe])  # the probe's result is pinned: never scrolled away
        self._clear_btn.clicked.connect(self.clear)
        self._feature_btn.clicked.connect(self.feature_view)
        for w in (self._layer, self._head, self._query_level):
            w.currentTextChanged.connect(self._reprobe)
        self._shared.toggled.connect(self._restyle)
        self._model.changed.connect(self._on_model_changed)
        # looked up at event time, so a replaced `probe_position`/`probe` is the one called
        self.mouse = ProbeMouse(viewer, self._on_click, self._hover, lambda pos: self.probe_position(pos))
        self._job = None
        self._pending: dict | None = None
        self.steps = LayerSteps(self)  # the first probe's layers, one per event-loop turn
        self._last_point: tuple[float, float] | None = None
        self.last_view: ProbeView | None = None
        self.last_result: dict | None = None  # the probe job's plain result (`engine.attention_jobs`)
        self.last_latency_s: float | None = None
        self._feature_job = None
        self._scratch = ScratchFolder("napari-muvit-attention-")
        if use_process:
            warm_when_shown(self, PROBE_PROCESS)  # torch and the engine load there while the user sets up

    def reset_choices(self, *_):
        """napari calls this whenever a layer is added or removed: refresh the image picker only, so the
        layer/head/query-level choices (set from the model after a probe) and the map stay as they are."""
        self._image.refresh()

    def probe_position(self, position) -> None:
        """Probe at a napari world position (the viewer's coordinates)."""
        layer = self._image.value
        if layer is None:
            show_error("Add an image layer to probe its attention.")
            return
        data = np.asarray(layer.world_to_data(position), dtype=float)
        self.probe(tuple(data[-2:]))  # level-0 data pixels are world px (an RGB layer has 2 dims too)

    def probe(self, world_yx) -> None:
        """Probe at world (level-1 pixel) coordinates `(y, x)`; runs off the GUI thread."""
        layer = self._image.value
        if layer is None:
            show_error("Add an image layer to probe its attention.")
            return
        self._last_point = (float(world_yx[0]), float(world_yx[1]))
        self._pending = probe_request(layer, image_source(layer), self._model.value, self._levels.value,
                                      self._last_point, self._layer.currentText(), self._head.currentText(),
                                      int(self._query_level.currentText()))
        self._t_request = time.perf_counter()
        if self._job is None or not self._job.running:
            self._start_next()

    def _restyle(self, *_):
        """Redraw the last maps with the chosen colour scale (no new probe)."""
        self.overlay.shared_scale = self._shared.isChecked()
        if self.last_view is not None and self.overlay.levels:
            layer = self._image.value
            self.overlay.show(self.last_view, image_pixel_size(layer) if layer is not None else None)
            self._legend.setText(self.overlay.legend())

    def _on_model_changed(self, *_):
        """Offer the new model's levels (read from its small YAML files, not its weights)."""
        try:
            levels = _model_levels(self._model.value)
        except (ValueError, FileNotFoundError) as exc:
            self._status.setText(f"Model: {exc}")
            return
        self._levels.set_levels(levels)
        self._status.setText("Click the image to probe.")

    def _reprobe(self, *_):
        if self._last_point is not None and self._image.value is not None:
            self.probe(self._last_point)

    # ---------------------------------------------------------------- worker
    def _start_next(self) -> None:
        if self._pending is None:
            return
        request, self._pending = self._pending, None
        job = probe_job_for(request, self.use_process)
        job.succeeded.connect(self._on_result)
        job.failed.connect(self._on_failed)
        job.ended.connect(self._start_next)
        first = self.last_result is None or tuple(self.last_result.get("key", ())) != tuple(request["key"])
        self._status.setText("Probing... (the first probe of this image and model loads the model and runs the "
                             "encoder: a few seconds)" if first else "Probing...")
        self._job = job.start()

    def _on_failed(self, message: str) -> None:
        self._status.setText("Probe failed.")
        show_error(message)

    def _on_result(self, output) -> None:
        t_gui = time.perf_counter()
        result, view = output, probe_view(output)
        info = dict(result["info"], query_share=result["level_share"], tile_share=result["tile_share"])
        info["delivery_s"] = t_gui - self._t_request - info["compute_s"]
        layer = self._image.value
        pixel_size = image_pixel_size(layer) if layer is not None else None
        self.overlay.shared_scale = self._shared.isChecked()
        self.overlay.show(view, pixel_size, steps=self.steps)
        self._legend.setText(self.overlay.legend())
        self.plot.set_shares(view.levels, info["query_share"], info.get("tile_share"))
        self._update_choices(view.levels, info)
        self.last_view, self.last_result, self.last_info = view, result, info
        info["gui_s"] = time.perf_counter() - t_gui
        self.last_latency_s = time.perf_counter() - self._t_request
        self._status.setText(f"Query at y={view.query_world_yx[0]:.0f}, x={view.query_world_yx[1]:.0f}; "
                              f"{self.last_latency_s * 1000:.0f} ms")

    def _update_choices(self, levels, info) -> None:
        layers = ["last", "rollout", *[str(i) for i in range(info.get("num_layers", 0))]]
        heads = ["mean", *[str(i) for i in range(info.get("heads", 0))]]
        for widget, choices in ((self._layer, layers), (self._head, heads),
                                (self._query_level, [str(int(v)) for v in levels])):
            if [widget.itemText(i) for i in range(widget.count())] != choices:
                value = widget.currentText()
                widget.blockSignals(True)  # new choices are no new request: nothing is probed again
                widget.clear()
                widget.addItems(choices)
                if value in choices:
                    widget.setCurrentText(value)
                widget.blockSignals(False)

    def clear(self, *_) -> None:
        self.overlay.clear()
        self._legend.setText("")
        self.plot.clear()
        self._last_point = None

    def feature_view(self, *_):
        """PCA-RGB of the encoder's finest-level features over the current view (engine `predict`)."""
        layer = self._image.value
        if layer is None:
            show_error("Add an image layer to see its features.")
            return None
        try:
            job = start_feature_view(self.viewer, layer, self._model.value, self._levels.value or None,
                                     self._scratch)
        except ValueError as exc:  # the view does not overlap the image
            show_error(str(exc))
            return None
        self._feature_job = job
        return job
