"""The predict dock's results part: the empty layers a Run click adds for the results to swap into, the
live preview, the result layers shown one per event-loop turn with the ROI list, and the layers of earlier
runs kept under their run's name (`PredictWidget` mixes it in)."""

from __future__ import annotations

import math
from pathlib import Path

from napari_muvit.widgets import layer_updates as U
from napari_muvit.widgets import layers as L
from napari_muvit.widgets import prediction_job
from napari_muvit.widgets.prediction_job import load_outputs
from napari_muvit.widgets.preview_view import placeholder_preview, preview_tuples, show_preview


class ResultsView:
    """Result layers of the predict dock. Uses the dock's ``viewer``, ``job``, ``image``, ``steps``,
    ``live``, ``output_layers``, ``roi_panel``, ``measure_panel``, ``status`` and ``run_button``."""

    def _placeholders(self, recipe, image, info) -> list[tuple]:
        """The empty layers added at the Run click, one per event-loop turn: those the results will only swap
        data into. Results up to `prediction_job.MATERIALIZE_MAX_PX` output pixels come as one array and
        fill every placeholder; larger ones are a pyramid, which napari cannot swap into a layer made for
        one array, so their layers are built when the results arrive and only the labels are made early,
        for the live results (each layer built costs the viewer 0.1-0.5 s on a small machine, a needless
        one twice that with its removal)."""
        shape = image.pyramid.shape[-2:]
        n = recipe.output_level
        swapped = math.ceil(shape[0] / n) * math.ceil(shape[1] / n) <= prediction_job.MATERIALIZE_MAX_PX
        if not swapped and not self.live.isChecked():
            return []
        region = recipe.region or (0, shape[0], 0, shape[1])
        empty = placeholder_preview(region, info.class_names, image.pixel_size, image.unit, info.class_colors)
        return preview_tuples(empty, image.origin_offset, with_probabilities=recipe.prob_dtype != "none" and swapped)

    def keep_previous_outputs(self, new_store) -> list[str]:
        """Output layers of earlier runs keep their results under a name with their run's store name
        (``MuViT labels [run-20260101-120000]``) instead of being replaced by the new run's layers.
        Returns the new names."""
        kept = []
        for layer in list(self.viewer.layers):
            meta = (layer.metadata or {}).get(L.META_KEY) or {}
            store = meta.get("store")
            if not meta.get("output") or not store or Path(store) == Path(new_store) or "[" in layer.name:
                continue
            layer.name = f"{layer.name} [{Path(store).stem}]"
            kept.append(layer.name)
        return kept

    def _show_preview(self, preview: dict):
        """Finished tiles so far (numpy from the worker side); replaced by the final layers."""
        if self.job is not None and self.job.running and self.image is not None and not self.steps.pending:
            show_preview(self.viewer, preview, self.image.origin_offset, live=True)

    def show_outputs(self, outputs, stepwise: bool = True):
        """Add (or refresh) the layers of a run (built off the GUI thread) and fill the ROI list.

        ``stepwise``: one layer per turn of the event loop, so the GUI never waits for all of them at once
        (each layer update costs a repaint, 30-150 ms with software OpenGL); Run is enabled again after
        the last one."""
        self.output_layers = []
        steps = [lambda tup=tup: self.output_layers.append(U.add_or_update(self.viewer, tup))
                 for tup in outputs.layers]
        steps.append(lambda: self.output_layers.extend(self.roi_panel.show(outputs.store, outputs.rois)))
        steps.append(lambda: self._outputs_shown(outputs))
        self.steps.queue(steps, stepwise)

    def _steps_drained(self):
        if self.job is None or not self.job.running:
            self.run_button.setEnabled(True)

    def _outputs_shown(self, outputs):
        self.measure_panel.set_store(outputs.store if outputs.task == "segmentation" else None)
        if outputs.roi_error:
            self.status.setText(self.status.text() + f"\nROIs: {outputs.roi_error}")
        if self.image is not None and self.image.layer in self.viewer.layers:
            self.viewer.layers.selection.active = self.image.layer

    def show_results(self, store, complete=None):
        """Show an existing prediction store (reads it here: for scripts and small stores)."""
        offset = self.image.origin_offset if self.image else (0.0, 0.0)
        self.show_outputs(load_outputs(store, None, offset, self.image.pixel_size if self.image else None, complete),
                          stepwise=False)

    def export_rois(self, fmt: str, path=None):
        """Export the last run's ranked ROIs (see `RoiPanel.export_rois`)."""
        return self.roi_panel.export_rois(fmt, path)
