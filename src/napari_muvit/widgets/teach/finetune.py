"""Fine-tune tab: train a segmentation head on a Labels layer or a tile classifier on annotated ROIs.

The training is `engine.teach_jobs.finetune_job` (`engine.training.finetune` with a `TrainRecipe` built from
the tab's settings) in the engine worker process; each epoch's history row comes back as the job's
``recorded`` signal and is drawn in the live plot.
"""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QCheckBox

from napari_muvit.widgets.form import LayerPicker, PathEdit, Section, combo, float_box, spin_box
from napari_muvit.widgets.image_layers import image_pixel_size, layers_of
from napari_muvit.widgets.layers import napari_to_world
from napari_muvit.widgets.levels import LevelTicks
from napari_muvit.widgets.model_panel import read_model_info
from napari_muvit.widgets.teach.training_tab import TrainingTab, chosen_folder, label_array, slide_source


def _base_levels(source: str) -> tuple[int, ...]:
    try:
        return read_model_info(source).levels
    except (ValueError, FileNotFoundError):
        return (1, 4, 16)  # the demo's; the base model's own error is shown when it is chosen


class FinetuneTab(TrainingTab):
    """Fine-tune a segmentation head (Labels layer) or tile classifier (annotated ROIs)."""

    description = "fine-tune"
    target = "napari_muvit.engine.teach_jobs:finetune_job"
    plot_keys = ("train_loss", "val_loss", "mDSC", "accuracy", "auc")
    tooltips = {
        "task": "segmentation: a class for every pixel, learnt from a Labels layer; classification: one class per "
                "tile, learnt from Shapes ROIs with a 'class' feature.",
        "annotations": "segmentation: a Labels layer (label k = class k, 0 = not annotated); classification: "
                       "Shapes or Points ROIs with a 'class' feature.",
        "model": "The model to start from: 'demo' or a model folder.",
        "levels": "The resolutions the model looks at together, offered from the base model (x1 = full "
                  "resolution, x16 = 16 times coarser, showing 16 times more tissue around each crop).",
        "epochs": "Passes over all annotations. The plot shows train/validation loss (lower is better) and mDSC "
                  "(mean Dice overlap of predicted and annotated classes, 1 = perfect) or accuracy/AUC.",
        "lr": "Learning rate: how big each training step is. The default suits most cases.",
        "train_encoder": "Also adapt the encoder (slower, needs more annotations); off trains only the head.",
        "out": "Folder the new model is saved to; use it as the model in MuViT predict.",
    }

    def __init__(self, viewer):
        super().__init__(viewer, xlabel="epoch", right_axis=("mDSC", "accuracy", "auc"))
        self.task = combo(["segmentation", "classification"])
        self.annotations = LayerPicker(viewer, self._annotation_layers)
        self.model = PathEdit("folder", value="demo", placeholder="demo, or a model folder")
        self.levels = LevelTicks(_base_levels("demo"))
        self.epochs = spin_box(5, 1, 1000)
        self.lr = float_box(1e-3, 1e-6, 1.0, 1e-4)
        self.train_encoder = QCheckBox("also train the encoder")
        self.out = PathEdit("save")
        self.data.row("task", self.task)
        self.data.row("annotations", self.annotations)
        model = Section("Model")
        model.row("base model", self.model)
        model.row("levels", self.levels)
        training = Section("Training")
        training.row("epochs", self.epochs)
        training.row("learning rate", self.lr)
        training.add(self.train_encoder)
        training.row("save to", self.out)
        self._finish_layout([self.data, model, training])
        self.task.currentTextChanged.connect(self.annotations.refresh)
        self.model.changed.connect(self._on_base_changed)

    def _on_base_changed(self, *_) -> None:
        """Offer the base model's levels (from its small YAML files; no torch on the GUI thread)."""
        try:
            self.levels.set_levels(_base_levels(self.model.value))
        except (ValueError, FileNotFoundError) as exc:
            self.status.setText(f"base model: {exc}")

    def _annotation_layers(self):
        kind = "labels" if self.task.currentText() == "segmentation" else "rois"
        return layers_of(self.viewer, kind)

    def _prepare(self) -> dict:
        image, ann = self.image.value, self.annotations.value
        if image is None or ann is None:
            raise ValueError("Choose an image and an annotation layer to fine-tune from.")
        out = chosen_folder(self.out, "the fine-tuned model")
        kw = {"source": slide_source(image), "task": self.task.currentText(), "model": self.model.value,
              "levels": self._levels_choice(), "epochs": self.epochs.value(), "lr": self.lr.value(),
              "train_encoder": self.train_encoder.isChecked(), "out": out}
        if self.task.currentText() == "segmentation":
            kw["annotations"] = label_array(ann)
        else:
            kw["annotations"] = rois_from_layer(ann, image_pixel_size(image))
        return kw

    def _levels_choice(self) -> str | None:
        """None (the base model's own) when every offered level is ticked, else the ticked ones."""
        if not self.levels.chosen():
            raise ValueError(f"Tick at least one level ({', '.join(f'x{f}' for f in self.levels.offered)}).")
        return None if self.levels.chosen() == self.levels.offered else self.levels.value

    def _on_done(self, result) -> None:
        super()._on_done(result)
        self.status.setText(f"saved {result.model_dir}; pick this folder as the model in MuViT predict")
        show_info(f"Fine-tuned model saved to {result.model_dir}")


def rois_from_layer(layer, pixel_size=None) -> list:
    """A Shapes (polygons/rectangles) or Points layer with a class column -> ROIs as plain dicts
    ``{"polygon": (N, 2) world px, "label": class name}`` (the worker process makes the engine's ROIs)."""
    features = layer.features
    column = next((c for c in ("class", "label", "classification", "name") if c in features), None)
    if column is None:
        raise ValueError(f"The layer {layer.name!r} needs a 'class' column in its features naming each ROI's class.")
    shapes = layer.data if hasattr(layer, "shape_type") else [np.asarray([p, p]) for p in layer.data]
    rois = []
    for verts, label in zip(shapes, features[column]):
        world = np.asarray([layer.data_to_world(v) for v in np.asarray(verts)])[:, -2:]
        if str(label) not in ("", "nan", "None"):
            rois.append({"polygon": np.asarray(napari_to_world(world, pixel_size), float), "label": str(label)})
    if not rois:
        raise ValueError(f"The layer {layer.name!r} has no ROI with a class; fill the 'class' column.")
    return rois
