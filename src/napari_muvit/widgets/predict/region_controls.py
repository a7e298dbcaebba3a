"""The predict dock's region part: which part of the slide a run covers, the tissue mask that
'foreground tiles only' uses, and the preview of the model's nested crops (`PredictWidget` mixes it in; the
controls themselves are built with the rest of the dock)."""

from __future__ import annotations

import numpy as np

from napari_muvit.data.run_region import clip_region, context_bboxes, region_center
from napari_muvit.widgets import layer_updates as U
from napari_muvit.widgets import layers as L
from napari_muvit.widgets.predict import run_inputs
from napari_muvit.widgets.region import shapes_region, view_region
from napari_muvit.widgets.workers import EngineJob


class RegionControls:
    """Region, tissue mask and crop preview of the predict dock. Uses the dock's ``viewer``, ``image``,
    ``model``, ``levels``, ``status``, ``region_mode``, ``shapes_combo``, ``foreground``, ``context`` and
    ``_opening``."""

    def show_tissue(self) -> EngineJob | None:
        """Compute the foreground (tissue) mask of the image off the GUI thread and show it as a layer."""
        if self.image is None:
            run_inputs.notify_error("there is no image layer to look at; open a slide or the MuViT sample first.")
            return None
        from napari_muvit.data.foreground import foreground_mask

        image = self.image
        job = EngineJob(lambda progress, cancel: foreground_mask(image.pyramid), description="tissue mask")
        job.succeeded.connect(lambda result: self._show_tissue_layer(image, *result))
        job.failed.connect(lambda sentence: run_inputs.notify_error(sentence))
        self.tissue_job = job.start()
        return job

    def _show_tissue_layer(self, image, mask, level) -> None:
        data = np.asarray(mask, np.uint8)
        tissue = L.labels_layer(data, float(level), image.pixel_size, image.unit, name="MuViT tissue",
                                origin=image.origin_offset, extra_meta={"kind": "tissue"})
        tissue[1]["opacity"] = 0.35
        U.add_or_update(self.viewer, tissue)
        self.status.setText(f"tissue: {100.0 * data.mean():.1f} % of the slide (mask at level x{level:g})")

    def _update_region_controls(self, *_):
        self.shapes_combo.setEnabled(self.region_mode.currentText() == "shapes layer")
        self.foreground.setEnabled(self.region_mode.currentText() == "whole slide")

    # ------------------------------------------------------------------------------------ region
    def region(self) -> tuple[int, int, int, int] | None:
        """The chosen region ``(y0, y1, x0, x1)`` world px, clipped to the slide (None = whole slide)."""
        if self.image is None:
            raise ValueError("there is no image layer to run on; open a slide or the MuViT sample first.")
        mode = self.region_mode.currentText()
        shape = self.image.pyramid.shape[-2:]
        if mode == "whole slide":
            return None
        if mode == "shapes layer":
            name = self.shapes_combo.currentText()
            if not name or name not in self.viewer.layers:
                raise ValueError("no Shapes layer is chosen; draw a rectangle in a Shapes layer first.")
            raw = shapes_region(self.viewer.layers[name], self.image.pixel_size)
        else:
            raw = view_region(self.viewer, self.image.pixel_size)
        raw = self.image.to_image_world(raw)
        return clip_region(raw, shape)

    def update_context_preview(self, *_, center_yx=None):
        """Draw the nested crop of every chosen level around the region centre (or ``center_yx``)."""
        if self._opening or not self.context.isChecked() or self.image is None or self.model.info is None:
            return
        chosen = self.levels.chosen()
        if not chosen:
            self._hide_context()
            return
        try:
            if center_yx is None:
                region = self.region() or (0, self.image.pyramid.shape[-2], 0, self.image.pyramid.shape[-1])
                center_yx = region_center(region)
        except ValueError:
            return  # nothing to preview (e.g. view off the slide); Run reports it
        tile = self.model.tile.value() or self.model.info.crop_size
        bboxes = context_bboxes(center_yx, chosen, tile)
        shown = self.image.from_image_world_boxes(bboxes)
        U.add_or_update(self.viewer, L.crop_outlines_layer(shown, chosen, self.image.pixel_size, self.image.unit,
                                                           name="MuViT context", extra_meta={"output": True}),
                        moved=True)

    def _hide_context(self):
        if "MuViT context" in self.viewer.layers:
            self.viewer.layers.remove("MuViT context")

    def _on_mouse_move(self, viewer, event):
        if "Shift" not in [m.name for m in event.modifiers] or self.image is None:
            return
        world = self.image.to_image_world_point(np.asarray(event.position, dtype=float)[-2:])
        self.update_context_preview(center_yx=world)
