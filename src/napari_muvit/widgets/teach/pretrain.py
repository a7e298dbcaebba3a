"""Pre-train tab: MR-MAE pre-training on the current slide, with reconstruction previews as layers.

The training is `engine.teach_jobs.pretrain_job` (`engine.training.pretrain`) in the engine worker process;
after it (done or cancelled) the saved MAE reconstructs the nested crops around the view's centre there, and
each level's reconstruction comes back as arrays and is shown on its world position.
"""

from __future__ import annotations

from napari.utils.notifications import show_error

from napari_muvit.data.run_region import region_center
from napari_muvit.widgets.form import PathEdit, Section, spin_box
from napari_muvit.widgets.image_layers import image_pixel_size, view_region_of
from napari_muvit.widgets.layer_steps import LayerSteps
from napari_muvit.widgets.layer_updates import add_or_update
from napari_muvit.widgets.layers import reconstruction_layer
from napari_muvit.widgets.levels import LevelTicks
from napari_muvit.widgets.teach.training_tab import TrainingTab, chosen_folder, slide_source

NEW_MODEL_LEVELS = (1, 2, 4, 8, 16, 32, 64)  # offered for a new model: each divides the next


class PretrainTab(TrainingTab):
    """MR-MAE pre-training on the current slide, with reconstruction previews as layers."""

    description = "pre-train"
    target = "napari_muvit.engine.teach_jobs:pretrain_job"
    tooltips = {
        "levels": "The resolutions the new model looks at together: x1 is full resolution, x4 is 4 times "
                  "coarser and shows 16 times more tissue around each crop.",
        "size": "Side of each crop in pixels, a multiple of 16: the model cuts a crop into 16 x 16-pixel squares "
                "(patches), one token each.",
        "steps": "Training steps. The model learns by filling in hidden patches (a masked autoencoder, MAE); "
                 "the plot shows its reconstruction loss (lower is better).",
        "batch": "Crops per step: larger is smoother but needs more memory.",
        "out": "Folder the pre-trained encoder is saved to (a base model for fine-tuning).",
    }

    def __init__(self, viewer):
        super().__init__(viewer, xlabel="step")
        self.levels = LevelTicks(NEW_MODEL_LEVELS, chosen=(1, 4, 16))
        self.size = spin_box(128, 16, 1024, step=16)
        self.steps = spin_box(200, 1, 1_000_000)
        self.batch = spin_box(8, 1, 512)
        self.out = PathEdit("save")
        model = Section("New model")
        model.row("levels", self.levels)
        model.row("crop size", self.size)
        training = Section("Training")
        training.row("steps", self.steps)
        training.row("batch size", self.batch)
        training.row("save to", self.out)
        self._finish_layout([self.data, model, training])
        self.previews: list = []
        self.layer_steps = LayerSteps(self)  # the reconstruction layers, one per event-loop turn

    def _prepare(self) -> dict:
        image = self.image.value
        if image is None:
            raise ValueError("Choose the image layer to pre-train on.")
        if not self.levels.chosen():
            raise ValueError("Tick at least one level for the new model (x1 is full resolution).")
        out = chosen_folder(self.out, "the pre-trained model")
        return {"source": slide_source(image), "levels": self.levels.value, "size": self.size.value(),
                "steps": self.steps.value(), "batch_size": self.batch.value(), "out": out,
                "center_yx": region_center(view_region_of(self.viewer, image))}

    def _on_done(self, result) -> None:
        super()._on_done(result)
        self._show(result)

    def _on_cancelled(self, result) -> None:
        super()._on_cancelled(result)
        self._show(result)

    def _show(self, result) -> None:
        if result is None:  # the worker was stopped: `_on_cancelled` says so
            return
        if result.preview is None:
            show_error(f"No reconstruction preview: {result.preview_error}")
        else:
            self.previews = []  # filled one layer per event-loop turn (each new layer holds napari 0.1-0.5 s)
            self.layer_steps.queue([lambda tup=tup: self.previews.append(add_or_update(self.viewer, tup))
                                    for tup in reconstruction_tuples(result.preview, self.image.value)])
        state = "cancelled" if result.cancelled else "done"
        self.status.setText(f"{state} after {result.steps_done} steps; model saved to {result.model_dir}; "
                             "reconstructions shown as layers")


def reconstruction_tuples(preview: dict, image_layer) -> list[tuple]:
    """One Image layer tuple per level with the MAE reconstruction, on the crop's world position."""
    pixel_size = image_pixel_size(image_layer) if image_layer is not None else None
    return [reconstruction_layer(recon, level, bbox, pixel_size)
            for level, bbox, recon in zip(preview["levels"], preview["bboxes"], preview["reconstruction"])]
