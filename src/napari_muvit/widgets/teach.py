"""The teaching dock widget: scribble probe, fine-tuning and MR-MAE pre-training from inside napari.

Three tabs, each a magicgui `Container`. The training itself is `napari_muvit.engine.training`
(`fit_probe`, `finetune`, `pretrain`); this module reads layers on the GUI thread, runs the engine in an
`EngineJob` thread, relays its per-step numbers to a live plot and turns results into layers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from napari_muvit.engine.recipe import parse_levels
from napari_muvit.widgets.attention import image_pixel_size, image_shape_yx, image_source, pick_first
from napari_muvit.widgets.layers import META_KEY, add_or_update, level_transform, napari_to_world
from napari_muvit.widgets.plots import CurvePlot
from napari_muvit.widgets.region import clip_region, view_region
from napari_muvit.widgets.workers import EngineJob

SCRIBBLE_LAYER = "MuViT scribbles"
PROBE_LAYER = "MuViT probe prediction"
RETRAIN_DELAY_MS = 1500  # after the last stroke: long enough to paint a few strokes in a row


_WARMED_UP = False


def warm_up() -> None:
    """Import what the training loops load lazily on their first optimiser step, once per process.

    torch's first optimiser step imports `torch._dynamo` (1-2 s), and that import holds the GIL long
    enough to freeze the GUI for 0.2-0.5 s in the middle of a run. It is done here instead, on the GUI
    thread when the widget opens: torch's imports are not safe to run in a second thread at the same time.
    """
    global _WARMED_UP
    if not _WARMED_UP:
        import torch._dynamo  # noqa: F401

        import napari_muvit.engine.training  # noqa: F401

        _WARMED_UP = True


class MetricRelay(QObject):
    """Carries `{name: value, "step": x}` rows from a training thread to the GUI thread (queued signal)."""

    row = Signal(object)


def _layers_of(viewer, kind: str):
    import napari.layers as nl

    cls = {"image": nl.Image, "labels": nl.Labels, "rois": (nl.Shapes, nl.Points)}[kind]
    return [layer for layer in viewer.layers if isinstance(layer, cls)]


class _TrainingTab(Container):
    """Shared parts of a tab that runs one training job: start/cancel, status, live plot, heartbeat-safe."""

    description = "training"
    plot_keys: tuple[str, ...] = ("loss",)  # history columns drawn in the live plot

    def __init__(self, viewer, xlabel: str, right_axis=()):
        super().__init__(labels=True)
        self.viewer = viewer
        self.image = ComboBox(label="image", choices=lambda _w: _layers_of(viewer, "image"), nullable=True)
        self.start_btn = PushButton(text="Start")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.plot = CurvePlot(xlabel=xlabel, right_axis=right_axis)
        self.relay = MetricRelay()
        self.relay.row.connect(self._on_row)
        self.job: EngineJob | None = None
        self.result = None
        self.start_btn.changed.connect(self.start)
        self.cancel_btn.changed.connect(self.cancel)

    def _finish_layout(self, controls: list) -> None:
        self.extend([self.image, *controls, self.start_btn, self.cancel_btn, self.status])
        self.native.layout().addWidget(self.plot)
        self.native.layout().addStretch(1)  # spare height goes below the plot, not between the rows
        self.refresh()

    def refresh(self, *_) -> None:
        self.reset_choices()
        pick_first(self.image)

    # subclasses: `_prepare()` on the GUI thread -> kwargs, `_run(kwargs, progress, cancel)` in the worker
    def start(self, *_) -> EngineJob | None:
        if self.job is not None and self.job.running:
            return self.job
        try:
            kwargs = self._prepare()
        except (ValueError, FileNotFoundError) as exc:
            show_error(str(exc))
            return None
        self.plot.reset()
        self.result = None
        warm_up()
        job = EngineJob(lambda progress, cancel: self._run(kwargs, progress, cancel),
                        description=self.description, unit="steps")
        job.progressed.connect(lambda done, total, text: setattr(self.status, "value", text))
        job.succeeded.connect(self._on_done)
        job.cancelled.connect(self._on_cancelled)
        job.failed.connect(self._on_failed)
        job.ended.connect(self._on_ended)
        self.start_btn.enabled, self.cancel_btn.enabled = False, True
        self.status.value = "starting..."
        self.job = job.start()
        return job

    def cancel(self, *_) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.value = "cancelling..."

    def _report(self, row: dict) -> None:
        """Worker thread: hand one row of numbers to the GUI thread."""
        self.relay.row.emit(dict(row))

    def _on_row(self, row: dict) -> None:
        x = row.get("epoch", row.get("step", 0))
        for key in self.plot_keys:
            if isinstance(row.get(key), (int, float)):
                self.plot.append(key, x, row[key])

    def _on_done(self, result) -> None:
        self.finished_at = time.perf_counter()  # the job's end, before any result layer is built
        self.result = result
        self.status.value = "done"

    def _on_cancelled(self, result) -> None:
        self.finished_at = time.perf_counter()
        self.result = result
        self.status.value = "cancelled"

    def _on_failed(self, message: str) -> None:
        self.status.value = "failed"
        show_error(message)

    def _on_ended(self) -> None:
        self.start_btn.enabled, self.cancel_btn.enabled = True, False
        self.plot.redraw()


def _view_center(viewer, layer) -> tuple[float, float]:
    """The canvas centre in world px, clipped onto the image."""
    y0, y1, x0, x1 = clip_region(view_region(viewer, image_pixel_size(layer)), image_shape_yx(layer))
    return ((y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0)


def _classes(text: str) -> list[str] | None:
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


class ScribbleProbeTab(_TrainingTab):
    """Paint a few strokes per class; the light probe head is fitted on frozen features and predicts."""

    description = "scribble probe"
    plot_keys = ("loss", "accuracy")

    def __init__(self, viewer):
        super().__init__(viewer, xlabel="step", right_axis=("accuracy",))
        self.start_btn.text = "Train probe"
        self.scribbles = ComboBox(label="scribbles", choices=lambda _w: _layers_of(viewer, "labels"),
                                  nullable=True, tooltip="Labels layer: label k = class k, 0 = not painted")
        self.new_btn = PushButton(text="New scribble layer")
        self.model = FileEdit(label="base model", mode="d", value="demo")
        self.classes = LineEdit(label="class names", value="", tooltip="comma separated: label 1, label 2, ...")
        self.region = ComboBox(label="predict", choices=["current view", "whole slide"], value="current view")
        self.auto = CheckBox(text="retrain after new strokes", value=True)
        self.save_path = FileEdit(label="save to", mode="w", value="")
        self.save_btn = PushButton(text="Save probe as model folder", enabled=False)
        self._finish_layout([self.scribbles, self.new_btn, self.model, self.classes,
                             self.region, self.auto, self.save_path, self.save_btn])
        self.debounce = QTimer(self.native)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(RETRAIN_DELAY_MS)
        self.debounce.timeout.connect(lambda: self.start())  # looked up at call time
        self._watched = None
        self._again = False
        self.new_btn.changed.connect(self.new_scribble_layer)
        self.scribbles.changed.connect(self._watch)
        self.save_btn.changed.connect(self.save)

    def new_scribble_layer(self, *_):
        """An empty Labels layer on the image's level-1 grid (lazy zarr chunks for big slides)."""
        image = self.image.value
        if image is None:
            show_error("Add an image layer first; the scribbles are painted on it.")
            return None
        shape = image_shape_yx(image)
        if int(np.prod(shape)) <= 64_000_000:
            data = np.zeros(shape, dtype=np.uint8)
        else:  # a gigapixel canvas: only painted chunks take memory
            import zarr

            data = zarr.zeros(shape, chunks=(1024, 1024), dtype="uint8")
        layer = self.viewer.add_labels(data, name=SCRIBBLE_LAYER, scale=image.scale, translate=image.translate)
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
        if self.auto.value and trained:
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
        if self.region.value == "current view":
            region = clip_region(view_region(self.viewer, image_pixel_size(image)), image_shape_yx(image))
        else:
            region = None
        labels = scribbles.data[0] if scribbles.multiscale else scribbles.data
        if isinstance(labels, np.ndarray):
            labels = labels.copy()  # a snapshot: painting may go on while the probe trains
        return {"source": image_source(image), "labels": labels, "model": str(self.model.value),
                "class_names": _classes(self.classes.value), "region": region,
                "pixel_size": image_pixel_size(image), "store_dir": self._store_dir()}

    def _store_dir(self) -> Path:
        """Scratch folder of this widget's probe predictions (older stores are removed)."""
        import shutil
        import tempfile

        if getattr(self, "_stores", None) is None:
            self._stores = Path(tempfile.mkdtemp(prefix="napari-muvit-probe-"))
        old = sorted(self._stores.glob("probe_*.zarr"))
        for path in old[:-1]:  # keep the one shown now; the next round replaces it
            shutil.rmtree(path, ignore_errors=True)
        return self._stores

    def _run(self, kw: dict, progress, cancel):
        return run_scribble_probe(kw, progress, cancel, self._report)

    def _on_done(self, result) -> None:
        super()._on_done(result)
        show_prediction(self.viewer, result, PROBE_LAYER)
        self.save_btn.enabled = True
        self.status.value = f"probe trained in {result['seconds']:.1f} s; prediction in '{PROBE_LAYER}'"

    def save(self, *_):
        if self.result is None:
            show_error("Train the probe first.")
            return None
        path = Path(str(self.save_path.value))
        if not str(self.save_path.value) or path == Path("."):
            show_error("Choose a folder name under 'save to' for the model.")
            return None
        try:
            out = save_probe(self.result, path)
        except (ValueError, FileNotFoundError, FileExistsError) as exc:
            show_error(str(exc))
            return None
        show_info(f"Saved the probe as a model folder: {out}")
        return out


class FinetuneTab(_TrainingTab):
    """Fine-tune a segmentation head (Labels layer) or tile classifier (annotated ROIs)."""

    description = "fine-tune"
    plot_keys = ("train_loss", "val_loss", "mDSC", "accuracy", "auc")

    def __init__(self, viewer):
        super().__init__(viewer, xlabel="epoch", right_axis=("mDSC", "accuracy", "auc"))
        self.task = ComboBox(label="task", choices=["segmentation", "classification"], value="segmentation")
        self.annotations = ComboBox(label="annotations", choices=self._annotation_layers, nullable=True,
                                    tooltip="segmentation: a Labels layer; classification: ROIs with a 'class'")
        self.model = FileEdit(label="base model", mode="d", value="demo")
        self.levels = LineEdit(label="levels", value="")
        self.epochs = SpinBox(label="epochs", value=5, min=1, max=1000)
        self.lr = FloatSpinBox(label="learning rate", value=1e-3, min=1e-6, max=1.0, step=1e-4)
        self.train_encoder = CheckBox(text="also train the encoder", value=False)
        self.out = FileEdit(label="save to", mode="w", value="")
        self._finish_layout([self.task, self.annotations, self.model, self.levels, self.epochs, self.lr,
                             self.train_encoder, self.out])
        self.task.changed.connect(lambda *_: self.annotations.reset_choices())

    def _annotation_layers(self, _w=None):
        kind = "labels" if self.task.value == "segmentation" else "rois"
        return _layers_of(self.viewer, kind)

    def _prepare(self) -> dict:
        image, ann = self.image.value, self.annotations.value
        if image is None or ann is None:
            raise ValueError("Choose an image and an annotation layer to fine-tune from.")
        if not str(self.out.value) or Path(str(self.out.value)) == Path("."):
            raise ValueError("Choose a folder name under 'save to' for the fine-tuned model.")
        kw = {"source": image_source(image), "task": self.task.value, "model": str(self.model.value),
              "levels": self.levels.value.strip() or None, "epochs": int(self.epochs.value),
              "lr": float(self.lr.value), "train_encoder": bool(self.train_encoder.value),
              "out": str(self.out.value)}
        if self.task.value == "segmentation":
            kw["annotations"] = ann.data[0] if ann.multiscale else ann.data
        else:
            kw["annotations"] = rois_from_layer(ann, image_pixel_size(image))
        return kw

    def _run(self, kw: dict, progress, cancel):
        return run_finetune(kw, progress, cancel, self._report)

    def _on_done(self, result) -> None:
        super()._on_done(result)
        self.status.value = f"saved {result.model_dir}; pick this folder as the model in MuViT predict"
        show_info(f"Fine-tuned model saved to {result.model_dir}")


class PretrainTab(_TrainingTab):
    """MR-MAE pre-training on the current slide, with reconstruction previews as layers."""

    description = "pre-train"

    def __init__(self, viewer):
        super().__init__(viewer, xlabel="step")
        self.levels = LineEdit(label="levels", value="1,4,16")
        self.size = SpinBox(label="crop size", value=128, min=16, max=1024, step=16)
        self.steps = SpinBox(label="steps", value=200, min=1, max=1_000_000)
        self.batch = SpinBox(label="batch size", value=8, min=1, max=512)
        self.out = FileEdit(label="save to", mode="w", value="")
        self._finish_layout([self.levels, self.size, self.steps, self.batch, self.out])
        self.previews: list = []

    def _prepare(self) -> dict:
        image = self.image.value
        if image is None:
            raise ValueError("Choose the image layer to pre-train on.")
        if not str(self.out.value) or Path(str(self.out.value)) == Path("."):
            raise ValueError("Choose a folder name under 'save to' for the pre-trained model.")
        return {"source": image_source(image), "levels": self.levels.value, "size": int(self.size.value),
                "steps": int(self.steps.value), "batch_size": int(self.batch.value), "out": str(self.out.value),
                "center_yx": _view_center(self.viewer, image)}

    def _run(self, kw: dict, progress, cancel):
        return run_pretrain(kw, progress, cancel, self._report)

    def _on_done(self, result) -> None:
        super()._on_done(result)
        self._show(result)

    def _on_cancelled(self, result) -> None:
        super()._on_cancelled(result)
        self._show(result)

    def _show(self, result) -> None:
        if result.preview is None:
            show_error(f"No reconstruction preview: {result.preview_error}")
        else:
            self.previews = show_reconstruction(self.viewer, result.preview, self.image.value)
        state = "cancelled" if result.cancelled else "done"
        self.status.value = (f"{state} after {result.steps_done} steps; model saved to {result.model_dir}; "
                             "reconstructions shown as layers")


# ------------------------------------------------------------------ engine calls (worker thread)
def _history_reader(path: Path, report):
    """Forward new rows of a training run's `history.csv` to `report` (rows appear once per epoch)."""
    seen = {"rows": 0, "mtime": None}

    def poll() -> None:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        if mtime == seen["mtime"]:
            return
        seen["mtime"] = mtime
        from napari_muvit.engine.training.state import History

        try:
            rows = History.read_csv(path).rows
        except (OSError, ValueError):
            return  # being rewritten right now: the next poll gets it
        for row in rows[seen["rows"]:]:
            report(row)
        seen["rows"] = len(rows)

    return poll


def run_scribble_probe(kw: dict, progress, cancel, report) -> dict:
    """Fit the probe on the scribbles, then predict the region with it (`engine.predict`)."""
    from napari_muvit.engine.training import fit_probe

    fit = fit_probe(kw["model"], kw["source"], kw["labels"], class_names=kw["class_names"],
                    progress=progress, cancel=cancel)
    for step, loss in enumerate(fit.losses, start=1):
        report({"step": step, "loss": loss})
    report({"step": len(fit.losses), "accuracy": fit.train_accuracy})
    out = {"fit": fit, "store": None, "seconds": fit.seconds, "pixel_size": kw["pixel_size"]}
    if fit.cancelled:
        return out
    out["store"] = predict_in_memory(fit.model, kw["source"], kw["region"], kw["store_dir"], cancel)
    out["layer"] = prediction_layer(out["store"], fit.class_names)
    return out


IN_MEMORY_PX = 64_000_000  # predictions up to this size are read in the worker: the GUI then only shows them


def prediction_layer(store, class_names) -> tuple | None:
    """Worker thread: the probe's argmax labels from its store as a Labels layer tuple.

    Region-sized results are read into memory here so that adding the layer on the GUI thread does not
    read chunks; a class the user called background is see-through.
    """
    from napari_muvit.widgets.results import store_layers

    tuples = [t for t in store_layers(store, prefix="MuViT probe") if t[2] == "labels"]
    if not tuples:
        return None
    data, kwargs, kind = tuples[0]
    arrays = data if isinstance(data, list) else [data]
    if int(np.prod(arrays[0].shape)) <= IN_MEMORY_PX:
        data = np.asarray(arrays[0])  # one level: small enough, and napari shows it without a pyramid
        kwargs["multiscale"] = False
    if isinstance(kwargs.get("colormap"), dict):
        for k, class_name in enumerate(class_names):
            if class_name.strip().lower() in ("background", "bg"):
                kwargs["colormap"][k + 1] = "transparent"  # store labels are class index + 1
    return data, kwargs, kind


def run_finetune(kw: dict, progress, cancel, report):
    from napari_muvit.engine.training import finetune

    poll = _history_reader(Path(kw["out"]) / "training" / "history.csv", report)

    def progress_and_poll(done, total):
        progress(done, total)
        poll()

    levels = kw["levels"]
    result = finetune(kw["source"], kw["annotations"], kw["model"], kw["out"], task=kw["task"],
                      levels=None if levels is None else parse_levels(levels), epochs=kw["epochs"], lr=kw["lr"],
                      train_encoder=kw["train_encoder"], progress=progress_and_poll, cancel=cancel)
    poll()
    return result


def run_pretrain(kw: dict, progress, cancel, report):
    from napari_muvit.engine.training import pretrain

    result = pretrain([kw["source"]], kw["out"], levels=parse_levels(kw["levels"]), size=kw["size"],
                      steps=kw["steps"], batch_size=kw["batch_size"], preview_every=0, progress=progress,
                      cancel=cancel, on_step=report)
    try:
        result.preview = reconstruction_preview(result.model_dir, kw["source"], kw["center_yx"])
    except (ValueError, FileNotFoundError) as exc:  # the model is saved either way; previews are extra
        result.preview, result.preview_error = None, str(exc)
    return result


def predict_in_memory(model, source, region, store_dir: Path, cancel) -> Path:
    """Predict `region` (world px, None = whole slide) with a model held in memory into a new store."""
    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe

    pyramid = open_pyramid(source)
    path = Path(store_dir) / f"probe_{time.time_ns()}.zarr"
    recipe = Recipe(source=str(source) if isinstance(source, (str, Path)) else "", model="scribble probe",
                    region=region, out=str(path))
    predict(recipe, cancel=cancel, model=model, pyramid=pyramid)
    return path


def reconstruction_preview(model_dir, source, center_yx) -> dict:
    """The MAE's reconstruction of the nested crops around `center_yx` (world px).

    Returns `levels`, `bboxes (L, 2, 2)` world px, `reconstruction (L, C, S, S)` (masked patches
    predicted, visible ones kept) and `masked (L, C, S, S)` (NaN where masked), normalised intensities.
    """
    import torch

    from napari_muvit.data import Normalizer, open_pyramid
    from napari_muvit.engine.training.previews import mask_to_pixels
    from napari_muvit.model import load_model

    mae = load_model(model_dir)
    card, enc = mae.card, mae.encoder
    pyramid = open_pyramid(source)
    policy = (card.normalization or {}).get("policy")
    normalizer = Normalizer.from_dict(card.normalization) if policy else Normalizer.from_pyramid(pyramid)
    levels = tuple(int(v) for v in enc.levels)
    img, bbox = pyramid.crops(tuple(center_yx), levels, int(card.crop_size), normalizer=normalizer)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = mae(torch.from_numpy(img[None]), torch.from_numpy(np.asarray(bbox, np.float32)[None]))
    size = img.shape[-2:]
    grid = tuple(s // p for s, p in zip(size, enc.patch_size))
    masked = mask_to_pixels(out["mask"][0].numpy(), len(levels), grid, tuple(enc.patch_size))[:, None]
    pred = out["pred"][0].float().numpy()
    return {"levels": levels, "bboxes": np.asarray(bbox), "reconstruction": np.where(masked, pred, img),
            "masked": np.where(masked, np.nan, img)}


# ------------------------------------------------------------------ results -> layers (GUI thread)
def show_prediction(viewer, result: dict, name: str):
    """The probe's prediction (built by `prediction_layer`) as one Labels layer `name`, replaced each round."""
    if result.get("layer") is None:
        return None
    data, kwargs, kind = result["layer"]
    kwargs["name"] = name
    return add_or_update(viewer, (data, kwargs, kind))


def show_reconstruction(viewer, preview: dict, image_layer) -> list:
    """One Image layer per level with the MAE reconstruction, on the crop's world position."""
    pixel_size = image_pixel_size(image_layer) if image_layer is not None else None
    out = []
    for level, bbox, recon in zip(preview["levels"], preview["bboxes"], preview["reconstruction"]):
        data = np.moveaxis(recon, 0, -1) if recon.shape[0] == 3 else recon[0]
        origin = np.asarray(bbox[0], dtype=float) - (level - 1) / 2  # first pixel's outer edge
        scale, translate = level_transform(level, pixel_size, 2, origin=origin)
        finite = data[np.isfinite(data)]
        limits = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99) + 1e-6))
        kwargs = {"name": f"MAE reconstruction x{level}", "scale": scale, "translate": translate,
                  "rgb": recon.shape[0] == 3, "contrast_limits": limits, "colormap": "gray",
                  "metadata": {META_KEY: {"kind": "reconstruction", "level": int(level)}}}
        if kwargs["rgb"]:
            kwargs.pop("colormap")
        out.append(add_or_update(viewer, (data.astype(np.float32), kwargs, "image")))
    return out


def save_probe(result: dict, path: Path) -> Path:
    """The fitted probe as a napari-muvit model folder (the predict widget can load it)."""
    from napari_muvit.model import save_model

    model = result["fit"].model
    return save_model(model, path, card=model.card)


def rois_from_layer(layer, pixel_size=None) -> list:
    """A Shapes (polygons/rectangles) or Points layer with a class column -> engine ROIs (world px)."""
    from napari_muvit.engine.training.annotations import ROI

    features = layer.features
    column = next((c for c in ("class", "label", "classification", "name") if c in features), None)
    if column is None:
        raise ValueError(f"The layer {layer.name!r} needs a 'class' column in its features naming each ROI's class.")
    shapes = layer.data if hasattr(layer, "shape_type") else [np.asarray([p, p]) for p in layer.data]
    rois = []
    for verts, label in zip(shapes, features[column]):
        world = np.asarray([layer.data_to_world(v) for v in np.asarray(verts)])[:, -2:]
        if str(label) not in ("", "nan", "None"):
            rois.append(ROI(polygon=napari_to_world(world, pixel_size), label=str(label)))
    if not rois:
        raise ValueError(f"The layer {layer.name!r} has no ROI with a class; fill the 'class' column.")
    return rois


class TeachWidget(QWidget):
    """Dock widget with the three ways of teaching the model, one tab each."""

    def __init__(self, napari_viewer):
        super().__init__()
        viewer = self.viewer = napari_viewer  # napari passes the viewer by this parameter name
        warm_up()
        self.scribble = ScribbleProbeTab(viewer)
        self.finetune = FinetuneTab(viewer)
        self.pretrain = PretrainTab(viewer)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.scribble.native, "Scribble probe")
        self.tabs.addTab(self.finetune.native, "Fine-tune")
        self.tabs.addTab(self.pretrain.native, "Pre-train")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMaximumWidth(520)  # a dock beside the canvas, not half the window
        for tab in (self.scribble, self.finetune, self.pretrain):
            viewer.layers.events.inserted.connect(tab.refresh)
            viewer.layers.events.removed.connect(tab.refresh)

