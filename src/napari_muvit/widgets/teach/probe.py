"""Scribble probe tab: paint a few strokes per class, fit the light probe head on frozen features, predict.

The fit (`engine.training.fit_probe`), saving the probe as a model folder and the prediction of the region
with it (`engine.predict`) run in the engine worker process (`engine.teach_jobs.probe_job`); the
prediction's labels are read off the GUI thread and shown. New strokes retrain it (debounced) while the
tab watches the scribble layer. Saving copies the probe's model folder.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QLineEdit, QPushButton

from napari_muvit.engine.scratch_folder import ScratchFolder
from napari_muvit.widgets.form import LayerPicker, PathEdit, Section, combo
from napari_muvit.widgets.image_layers import image_pixel_size, image_shape_yx, layers_of, view_region_of
from napari_muvit.widgets.layer_updates import add_or_update
from napari_muvit.widgets.layers import class_color
from napari_muvit.widgets.teach.training_tab import TrainingTab, chosen_folder, label_array, slide_source

SCRIBBLE_LAYER = "MuViT scribbles"
PROBE_LAYER = "MuViT probe prediction"
RETRAIN_DELAY_MS = 1500  # after the last stroke: long enough to paint a few strokes in a row
IN_MEMORY_PX = 64_000_000  # predictions up to this size are read in the worker: the GUI then only shows them
SCRIBBLE_CLASSES = 64  # label values with a colour in the scribble layer
CANVAS_IN_MEMORY_PX = 64_000_000  # larger scribble canvases are zarr stores on disk (only painted chunks)
STORE_KEY = "napari_muvit_scribble_store"  # layer metadata: the canvas's zarr store, what the worker opens


def scribble_colormap() -> dict:
    """Label ``k`` (class ``k - 1``) in the class palette the probe's prediction uses for that class."""
    return {None: "transparent", 0: "transparent",
            **{k + 1: class_color(None, k) for k in range(SCRIBBLE_CLASSES)}}


def _classes(text: str) -> list[str] | None:
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


class ScribbleProbeTab(TrainingTab):
    """Paint a few strokes per class; the light probe head is fitted on frozen features and predicts."""

    description = "scribble probe"
    target = "napari_muvit.engine.teach_jobs:probe_job"
    plot_keys = ("loss", "accuracy")
    tooltips = {
        "scribbles": "Labels layer of strokes: label k = class k (in that class's colour), 0 = not painted.",
        "new_btn": "Add an empty scribble layer on the image, ready to paint.",
        "model": "The model whose features the probe learns from: 'demo' or a model folder.",
        "classes": "Names of the classes, comma separated: label 1, label 2, ... (empty: class 0, class 1, ...).",
        "region": "Where to predict with the trained probe.",
        "auto": "Retrain by itself shortly after you stop painting.",
        "save_path": "Folder to save the probe to, as a model usable in MuViT predict.",
        "save_btn": "Save the trained probe as a model folder.",
    }

    def __init__(self, viewer):
        super().__init__(viewer, xlabel="step", right_axis=("accuracy",), start_text="Train probe")
        self.scribbles = LayerPicker(viewer, lambda: layers_of(viewer, "labels"))
        self.new_btn = QPushButton("New scribble layer")
        self.model = PathEdit("folder", value="demo", placeholder="demo, or a model folder")
        self.classes = QLineEdit()
        self.classes.setPlaceholderText("comma separated: label 1, label 2, ...")
        self.region = combo(["current view", "whole slide"], "current view")
        self.auto = QCheckBox("retrain after new strokes")
        self.auto.setChecked(True)
        self.save_path = PathEdit("save")
        self.save_btn = QPushButton("Save probe as model folder")
        self.save_btn.setEnabled(False)
        self.data.row("scribbles", self.scribbles)
        self.data.add(self.new_btn)
        probe = Section("Probe")
        probe.row("base model", self.model)
        probe.row("class names", self.classes)
        probe.row("predict", self.region)
        probe.add(self.auto)
        save = Section("Save")
        save.row("save to", self.save_path)
        save.add(self.save_btn)
        self._finish_layout([self.data, probe, save])
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(RETRAIN_DELAY_MS)
        self.debounce.timeout.connect(lambda: self.start())  # looked up at call time
        self._watched = None
        self._again = False
        self._scratch = ScratchFolder("napari-muvit-probe-")  # this tab's probe predictions
        self.new_btn.clicked.connect(self.new_scribble_layer)
        self.scribbles.currentTextChanged.connect(lambda *_: self._watch(self.scribbles.value))
        self._watch(self.scribbles.value)
        self.save_btn.clicked.connect(self.save)

    def new_scribble_layer(self, *_):
        """An empty Labels layer on the image's level-1 grid (lazy zarr chunks for big slides)."""
        image = self.image.value
        if image is None:
            show_error("Add an image layer first; the scribbles are painted on it.")
            return None
        shape = image_shape_yx(image)
        metadata = {}
        if int(np.prod(shape)) <= CANVAS_IN_MEMORY_PX:
            data = np.zeros(shape, dtype=np.uint8)
        else:  # a gigapixel canvas: only painted chunks take space, and the worker process opens the store
            import zarr

            store = Path(tempfile.mkdtemp(prefix="napari-muvit-scribbles-")) / "scribbles.zarr"
            data = zarr.open_array(str(store), mode="w", shape=shape, chunks=(1024, 1024), dtype="uint8",
                                   fill_value=0)
            metadata[STORE_KEY] = str(store)
        layer = self.viewer.add_labels(data, name=SCRIBBLE_LAYER, scale=image.scale, translate=image.translate,
                                       colormap=scribble_colormap(), metadata=metadata)
        layer.mode = "paint"
        layer.brush_size = 10
        self.scribbles.value = layer
        return layer

    def _watch(self, layer) -> None:
        """Retrain (debounced) whenever the watched scribble layer gets a new stroke."""
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._on_paint)
        self._watched = layer
        if layer is not None:
            layer.events.paint.connect(self._on_paint)

    def _on_paint(self, *_):
        trained = self.result is not None or self.job is not None  # a probe exists or is being fitted
        if self.auto.isChecked() and trained:
            self.debounce.start()  # restarts: trains once, RETRAIN_DELAY_MS after the last stroke

    def start(self, *_):
        if self.job is not None and self.job.running:
            self._again = True  # strokes arrived mid-training: one more round when this one ends
            return self.job
        return super().start()

    def _on_ended(self) -> None:
        super()._on_ended()
        if self._again:
            self._again = False
            self.start()

    def _prepare(self) -> dict:
        image, scribbles = self.image.value, self.scribbles.value
        if image is None or scribbles is None:
            raise ValueError("Choose an image and a scribbles Labels layer (or make one with 'New scribble layer').")
        if self.region.currentText() == "current view":
            region = view_region_of(self.viewer, image)
        else:
            region = None
        # our on-disk canvas goes as its store's path (painting writes through); other layers as a numpy snapshot
        labels = scribbles.metadata.get(STORE_KEY) or label_array(scribbles)
        return {"source": slide_source(image), "labels": labels, "model": self.model.value,
                "class_names": _classes(self.classes.text()), "region": region,
                "class_colors": [class_color(None, k) for k in range(SCRIBBLE_CLASSES)],
                "pixel_size": image_pixel_size(image), "store": str(self._scratch.fresh("probe")),
                "model_dir": str(self._scratch.fresh("probemodel"))}

    def _read_outputs(self, result):
        """Off the GUI thread: the prediction's labels as a ready layer tuple (``result["layer"]``)."""
        if result is not None and result.get("store") is not None:
            result["layer"] = prediction_layer(result["store"], result["class_names"])
        return result

    def _on_done(self, result) -> None:
        super()._on_done(result)
        show_prediction(self.viewer, result, PROBE_LAYER)
        self.save_btn.setEnabled(True)
        self.status.setText(f"probe trained in {result['seconds']:.1f} s; prediction in '{PROBE_LAYER}'")

    def save(self, *_):
        if self.result is None or self.result.get("model_dir") is None:
            show_error("Train the probe first.")
            return None
        try:
            out = save_probe(self.result, Path(chosen_folder(self.save_path, "the model")))
        except (ValueError, FileNotFoundError, FileExistsError) as exc:
            show_error(str(exc))
            return None
        show_info(f"Saved the probe as a model folder: {out}")
        return out


def prediction_layer(store, class_names) -> tuple | None:
    """Off the GUI thread: the probe's argmax labels from its store as a Labels layer tuple.

    Region-sized results are read into memory here so that adding the layer on the GUI thread does not
    read chunks; a class the user called background is see-through (`layers.labels_layer`).
    """
    from napari_muvit.widgets.prediction_job import materialize_small
    from napari_muvit.widgets.results import store_layers

    tuples = [t for t in store_layers(store, prefix="MuViT probe") if t[2] == "labels"]
    if not tuples:
        return None
    return materialize_small(tuples[:1], IN_MEMORY_PX)[0]


def show_prediction(viewer, result: dict, name: str):
    """The probe's prediction (built by `prediction_layer`) as one Labels layer `name`, replaced each round."""
    if result.get("layer") is None:
        return None
    data, kwargs, kind = result["layer"]
    kwargs["name"] = name
    return add_or_update(viewer, (data, kwargs, kind))


def save_probe(result: dict, path: Path) -> Path:
    """The fitted probe's model folder (written by the worker) copied to `path`; the predict widget loads it."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"The model folder {path} already exists; choose another name.")
    if path.exists():
        path.rmdir()
    shutil.copytree(result["model_dir"], path)
    return path
