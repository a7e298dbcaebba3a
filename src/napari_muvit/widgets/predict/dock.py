"""The MuViT predict dock widget: image + levels + model + region -> a Recipe -> engine job -> layers.

No algorithm lives here: the widget reads its panels into a `Recipe`, checks the inputs with one
sentence per problem, runs ``engine.predict`` off the GUI thread (`prediction_job`: the engine process for
slides from files, a worker thread for in-memory layers) and shows the output store as world-aligned
layers (`results_view.ResultsView`, with `results.store_layers`, `preview_view`, `roi_panel`). The region,
tissue mask and crop preview are `region_controls.RegionControls`.
"""

from __future__ import annotations

import time
from pathlib import Path

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QPushButton, QWidget

from napari_muvit.widgets import layer_updates as U
from napari_muvit.widgets import layers as L
from napari_muvit.widgets.background_import import when_imported
from napari_muvit.widgets.engine_process import warm_when_shown
from napari_muvit.widgets.form import (
    LayerPicker,
    RunButtons,
    Section,
    StatusLine,
    dock_layout,
    label,
    set_tips,
    side_by_side,
)
from napari_muvit.widgets.layer_steps import LayerSteps
from napari_muvit.widgets.levels import LevelsPanel
from napari_muvit.widgets.model_panel import ModelPanel
from napari_muvit.widgets.predict.legend import ClassLegend
from napari_muvit.widgets.predict.measure_panel import MeasurePanel
from napari_muvit.widgets.predict.region_controls import RegionControls
from napari_muvit.widgets.predict.results_view import ResultsView
from napari_muvit.widgets.predict.roi_panel import RoiPanel
from napari_muvit.widgets.predict.run_inputs import (
    ImageInput,
    check_inputs,
    image_input,
    notify_error,
    runs_dir,
)
from napari_muvit.widgets.predict.settings import load_settings, save_settings
from napari_muvit.widgets.prediction_job import make_prediction_job
from napari_muvit.widgets.region import REGION_MODES
from napari_muvit.widgets.workers import EngineJob

SETTINGS_NAME = "predict"
DEFAULTS = {"model": "demo", "model_folder": "", "device": "auto", "precision": "auto", "batch_size": 0,
            "tile": 0, "overlap": -2, "levels": None, "region_mode": "current view", "foreground": False,
            "context": False, "live": True, "prob_dtype": "uint8", "output_level": 1}
PROB_DTYPES = {  # label in the dock -> recipe value
    "8-bit (p = v/255, smallest)": "uint8", "16-bit float": "float16", "32-bit float (largest)": "float32",
    "none (labels only)": "none",
}
OUTPUT_LEVELS = (1, 2, 4, 8, 16)
TIPS = {  # control attribute -> plain-words help
    "image_combo": "The slide to run the model on (an image layer).",
    "tissue_button": "Show, as the layer 'MuViT tissue', the tissue mask that 'foreground tiles only' uses: tiles "
                     "whose area holds none of it are skipped.",
    "context": "Outline the nested crop of every ticked level around the region centre, as the model will see it. "
               "Hold Shift and move the mouse to follow the cursor.",
    "live": "Update the labels about once a second as tiles finish. Each update repaints the canvas, which takes "
            "50-250 ms on a small machine without a GPU.",
    "region_mode": "Which part of the slide to predict: what the canvas shows now, a rectangle drawn in a Shapes "
                   "layer, or the whole slide.",
    "shapes_combo": "The Shapes layer whose rectangles bound the region.",
    "foreground": "Whole slide only: skip tiles with no tissue (bright or empty background); they are counted as "
                  "skipped, not computed.",
    "prob_dtype": "How class probabilities are stored: 8 bits per class (p = v/255, a quarter of the space of "
                  "32-bit floats), 16- or 32-bit floats, or not at all (the labels and the per-tile scores are "
                  "always kept).",
    "output_level": "Resolution of the stored probabilities and labels: x1 = every slide pixel, x4 = one output "
                    "pixel per 4 x 4 slide pixels (16 times smaller), aligned with the slide. Segmentation models "
                    "only.",
    "run_button": "Predict the region in the background; results appear as layers. After a cancel, Run with the "
                  "same settings continues where it stopped.",
    "cancel_button": "Stop after the current batch; finished tiles are kept.",
    "status": "What the run is doing: tiles computed / to compute, skipped background tiles, and time left.",
}


class PredictWidget(RegionControls, ResultsView, QWidget):
    """Dock widget: run a MuViT model on a region of a slide and show the results as layers."""

    preview_ready = Signal(object)  # finished part of the store, read on the worker side

    def __init__(self, napari_viewer, parent=None, use_process: bool = True):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.use_process = use_process  # slides from files run in the engine process (GIL-free GUI)
        self.job: EngineJob | None = None
        self.image: ImageInput | None = None
        self.last_recipe = None
        self.last_store: Path | None = None
        self.resumable: Path | None = None
        self._skipped_before: int | None = None  # background tiles of the cancelled run Run continues
        self._pending_settings: dict | None = None  # the choices of the running job
        self._failed_settings: dict | None = None  # the choices of the last run that failed
        self.output_layers: list = []
        self.steps = LayerSteps(self)  # layer updates still to run (one per event-loop turn)
        self.steps.drained.connect(self._steps_drained)
        self._saved_levels = None
        self._opening = True  # no layer is added while the dock is built: napari would stall for it
        self._reading_image = False  # the slide readers are being imported off the GUI thread
        self._build_ui()
        self._apply_settings(load_settings(SETTINGS_NAME, DEFAULTS))
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.mouse_move_callbacks.append(self._on_mouse_move)
        self.preview_ready.connect(self._show_preview)
        self._refresh_layer_choices()
        self._opening = False
        if self.context.isChecked():  # drawn once the dock is shown, not while napari adds it
            QTimer.singleShot(0, self.update_context_preview)
        if use_process:
            warm_when_shown(self)  # torch imports in the worker process while the user sets up

    # ------------------------------------------------------------------------------------ layout
    def _build_ui(self):
        images = lambda: [ly for ly in self.viewer.layers if U.layer_type(ly) == "image" and not _is_output(ly)]  # noqa: E731
        shapes = lambda: [ly for ly in self.viewer.layers if U.layer_type(ly) == "shapes" and not _is_output(ly)]  # noqa: E731
        self.image_combo = LayerPicker(self.viewer, images)
        self.image_info = label()
        self.levels = LevelsPanel()
        self.model = ModelPanel()
        self.region_mode = QComboBox()
        self.region_mode.addItems(REGION_MODES)
        self.shapes_combo = LayerPicker(self.viewer, shapes)
        self.foreground = QCheckBox("foreground tiles only")
        self.tissue_button = QPushButton("Show tissue")
        self.context = QCheckBox("show the model's crops")
        self.live = QCheckBox("show results while running")
        self.prob_dtype = QComboBox()
        self.prob_dtype.addItems(list(PROB_DTYPES))
        self.output_level = QComboBox()
        self.output_level.addItems([f"x{f}" for f in OUTPUT_LEVELS])
        buttons = RunButtons("Run")
        self.run_button, self.cancel_button = buttons.run, buttons.cancel
        self.status = StatusLine()
        set_tips(self, TIPS)
        self.legend = ClassLegend()
        self.roi_panel = RoiPanel(self.viewer, lambda: self.image, self.status.setText)
        self.rois = self.roi_panel.table
        self.measure_panel = MeasurePanel(self.viewer, self.status.setText)

        image_box = Section("Image")
        image_box.add(self.image_combo)
        image_box.add(self.image_info)
        levels_box = Section("Levels")
        levels_box.add(self.levels)
        model_box = Section("Model")
        model_box.add(self.model)
        region_box = Section("Region")
        region_box.row("region", self.region_mode)
        region_box.row("Shapes layer", self.shapes_combo)
        region_box.add(side_by_side(self.foreground, self.tissue_button))
        region_box.add(self.context)
        output_box = Section("Output")
        output_box.row("probabilities", self.prob_dtype)
        output_box.row("resolution", self.output_level)
        run_box = Section("Run")
        for w in (self.live, buttons, self.status, self.legend):
            run_box.add(w)
        # Run, Cancel and the status are pinned under the settings: they never scroll away
        dock_layout(self, [image_box, levels_box, model_box, region_box, output_box], [run_box],
                    later=[self.roi_panel, self.measure_panel])

        self.image_combo.currentTextChanged.connect(self._on_image_changed)
        self.model.source.currentTextChanged.connect(self._on_model_changed)
        self.model.folder.editingFinished.connect(self._on_model_changed)
        self.region_mode.currentTextChanged.connect(self._update_region_controls)
        self.context.toggled.connect(lambda on: self.update_context_preview() if on else self._hide_context())
        self.levels.changed.connect(self.update_context_preview)
        self.run_button.clicked.connect(self.run)
        self.tissue_button.clicked.connect(self.show_tissue)
        self.cancel_button.clicked.connect(self.cancel)

    # ------------------------------------------------------------------------------------ settings
    def settings(self) -> dict:
        s = self.model.settings()
        s.update(levels=list(self.levels.chosen()) or None, region_mode=self.region_mode.currentText(),
                 foreground=self.foreground.isChecked(), context=self.context.isChecked(),
                 live=self.live.isChecked(), prob_dtype=PROB_DTYPES[self.prob_dtype.currentText()],
                 output_level=OUTPUT_LEVELS[self.output_level.currentIndex()])
        return s

    def _apply_settings(self, s: dict):
        self.model.apply_settings(s)
        self.region_mode.setCurrentText(str(s.get("region_mode", "current view")))
        self.foreground.setChecked(bool(s.get("foreground")))
        self.context.setChecked(bool(s.get("context", False)))
        self.live.setChecked(bool(s.get("live", True)))
        labels = {v: k for k, v in PROB_DTYPES.items()}
        self.prob_dtype.setCurrentText(labels.get(s.get("prob_dtype"), labels["uint8"]))
        level = s.get("output_level", 1)
        self.output_level.setCurrentIndex(OUTPUT_LEVELS.index(level) if level in OUTPUT_LEVELS else 0)
        self._saved_levels = s.get("levels")
        self._on_model_changed()
        self._update_region_controls()

    def save_settings(self):
        save_settings(SETTINGS_NAME, self.settings())

    # ------------------------------------------------------------------------------------ choices
    def _refresh_layer_choices(self, *_):
        """After layers came or went: read the image again when the chosen one is not the one read (the pickers
        refresh themselves and report a new choice through ``currentTextChanged``)."""
        if self.image_combo.currentText() != (self.image.layer.name if self.image else None):
            self._on_image_changed()

    def _on_image_changed(self, *_):
        self.image = None
        if self._reading_image:
            return  # `_image_readers_ready` reads the chosen image when the readers are imported
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            self.image_info.setText("Add or open an image (File > Open Sample > MuViT for a demo slide).")
            self.levels.set_pyramid([], [])
            return
        if not when_imported("napari_muvit.data.readers", self._image_readers_ready, self):
            self._reading_image = True  # the readers import in a thread; this runs again when they are in
            self.image_info.setText("Reading the image…")
            self.levels.set_pyramid([], [])
            return
        try:
            self.image = image_input(self.viewer.layers[name])
        except (ValueError, FileNotFoundError) as exc:
            self.image_info.setText(f"<i>{exc}</i>")
            self.levels.set_pyramid([], [])
            return
        p = self.image.pyramid
        kind = "RGB" if p.rgb else f"{p.n_channels} channel(s)"
        self.image_info.setText(f"{' x '.join(map(str, p.shape))} px · {kind} · {p.dtype} · {len(p.arrays)} level(s)")
        self.levels.set_pyramid(p.level_factors, [p.level_shape(i) for i in range(len(p.arrays))],
                                p.pixel_size, p.unit)
        self.update_context_preview()

    def _image_readers_ready(self):
        self._reading_image = False
        self._on_image_changed()

    def _on_model_changed(self, *_):
        try:
            info = self.model.refresh()
        except (ValueError, FileNotFoundError):
            self.levels.set_model_levels([])
            self.legend.set_classes([])
            return
        self.legend.set_classes(info.class_names, info.class_colors)
        self.model.constrain(info)
        saved = [f for f in (self._saved_levels or []) if f in info.levels] or None
        # only an encoder runs on a subset of its levels; a trained head needs all of them
        self.levels.set_model_levels(info.levels, saved, fixed=info.task != "encoder")
        # the output choices apply to dense (segmentation) outputs only
        self.output_level.setEnabled(info.task == "segmentation")
        self.prob_dtype.setEnabled(info.task == "segmentation")
        self.update_context_preview()

    # ------------------------------------------------------------------------------------ run
    def build_recipe(self):
        """Recipe for the current choices; ValueError with one sentence when something does not fit."""
        from napari_muvit.engine.recipe import Recipe

        if self._reading_image:
            raise ValueError("the image is still being read; Run again in a moment.")
        if self.image is None:
            raise ValueError("there is no image layer to run on; open a slide or the MuViT sample first.")
        info = self.model.refresh()
        levels = self.levels.chosen()
        if not levels:
            raise ValueError(f"no model level is ticked; tick at least one of {', '.join(f'x{f}' for f in info.levels)}.")
        check_inputs(self.image, info, levels)
        self.model.check(info)
        region = self.region()
        m = self.model
        out = runs_dir() / time.strftime("run-%Y%m%d-%H%M%S.zarr")
        k = 2
        while out.exists() or (self.last_store is not None and out == self.last_store):  # two runs in a second
            out = out.with_name(f"{out.name[:-5].split('_')[0]}_{k}.zarr")
            k += 1
        recipe = Recipe(
            source=self.image.source or "", model=info.source, levels=levels, region=region,
            tile=m.tile.value() or None, overlap=None if m.overlap.value() < 0 else m.overlap.value(),
            device=m.device.currentText(), precision=m.precision.currentText(),
            batch_size=m.batch.value() or "auto", foreground=self.foreground.isChecked() and region is None,
            out=str(out),
        )
        if info.task == "segmentation":
            recipe = recipe.replace(prob_dtype=PROB_DTYPES[self.prob_dtype.currentText()],
                                    output_level=OUTPUT_LEVELS[self.output_level.currentIndex()])
        if self.resumable is not None and self.last_recipe is not None and \
                recipe.replace(out=self.last_recipe.out).to_dict() == self.last_recipe.to_dict():
            recipe = self.last_recipe.replace(resume=True)  # same settings: continue the cancelled store
        return recipe

    def run(self):
        """Start a prediction (errors become notifications). Returns the job, or None."""
        if self.job is not None and self.job.running:
            notify_error("a MuViT run is already going; cancel it or wait for it to finish.")
            return None
        try:
            recipe = self.build_recipe()
        except (ValueError, FileNotFoundError) as exc:
            notify_error(str(exc))
            self.status.setText(str(exc))
            return None
        self._pending_settings = self.settings()  # remembered once the run has worked (or was cancelled)
        self.last_recipe, self.last_store, self.resumable = recipe, Path(recipe.out), None
        self.status.setText("starting…" if not recipe.resume else "continuing the cancelled run…")
        image = self.image
        info = self.model.info
        if not recipe.resume:
            self.keep_previous_outputs(recipe.out)
        if info.task == "segmentation" and info.class_names and not recipe.resume:
            self.steps.queue([lambda tup=tup: U.add_or_update(self.viewer, tup)
                              for tup in self._placeholders(recipe, image, info)])
        self.job = make_prediction_job(recipe, None if image.source else image.pyramid, image.origin_offset,
                                       image.pixel_size,
                                       on_preview=self.preview_ready.emit if self.live.isChecked() else None,
                                       use_process=self.use_process,
                                       skipped_before=self._skipped_before if recipe.resume else None)
        self.job.progressed.connect(self.status.progress)
        self.job.succeeded.connect(self._on_succeeded)
        self.job.cancelled.connect(self._on_cancelled)
        self.job.failed.connect(self._on_failed)
        self.job.ended.connect(self._on_job_ended)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job.start()
        return self.job

    def cancel(self):
        if self.job is not None and self.job.running:
            self.job.cancel()  # the job's progress line says "cancelling…" from now on

    def _remember_settings(self):
        if self._pending_settings is not None:
            save_settings(SETTINGS_NAME, self._pending_settings)
            self._pending_settings = None
        self._failed_settings = None

    def _on_succeeded(self, outputs):
        self._remember_settings()
        st = self.job.state
        extra = [f"{st.skipped} background tiles skipped"] if st.skipped else []
        extra += [f"{st.before} done by the earlier run"] if st.before else []
        self.status.setText(f"done: {st.now} tiles computed{' (' + ', '.join(extra) + ')' if extra else ''}"
                            f" · results in {outputs.store}")
        self.show_outputs(outputs)

    def _on_cancelled(self, outputs):
        self._remember_settings()
        self.resumable = self.last_store
        st = self.job.state
        self._skipped_before = st.skipped
        self.status.setText(f"cancelled after {st.now}/{st.todo} tiles; the results so far are kept and Run "
                            "continues where it stopped (same settings).")
        if outputs is not None:
            self.show_outputs(outputs)

    def _on_failed(self, sentence: str):
        self._failed_settings, self._pending_settings = self._pending_settings, None  # never remembered
        notify_error(sentence)
        self.status.setText(f"stopped: {sentence}")

    def _on_job_ended(self):
        self.cancel_button.setEnabled(False)
        self.status.idle()
        if not self.steps.pending:  # else Run comes back with the last result layer
            self.run_button.setEnabled(True)

    def closeEvent(self, event):
        if self.settings() != self._failed_settings:  # a choice that just failed is not kept for next time
            self.save_settings()
        if self.job is not None and self.job.running:
            self.job.cancel()
        super().closeEvent(event)


def _is_output(layer) -> bool:
    return bool(((layer.metadata or {}).get(L.META_KEY) or {}).get("output"))
