"""What every teaching tab shares: start/cancel, status line, live metric plot, the worker job.

A tab reads its inputs on the GUI thread (`_prepare`: a picklable dict of paths, numpy arrays and numbers)
and runs its job (`target`, in `engine/teach_jobs.py`) in the engine worker process (`ProcessJob`), so
torch is never imported by the GUI process and the training loop's Python never holds the GUI's
interpreter lock. Each history row the engine logs comes back as the job's ``recorded`` signal and is
drawn in the live plot (`_on_row`); the result comes back as plain objects and is shown (`_on_done`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QWidget

from napari_muvit.widgets.engine_process import ProcessJob
from napari_muvit.widgets.form import LayerPicker, RunButtons, Section, StatusLine, dock_layout, set_tips
from napari_muvit.widgets.image_layers import image_source, layers_of
from napari_muvit.widgets.plots import CurvePlot
from napari_muvit.widgets.workers import EngineJob

WRAP_UP_S = 120.0  # after reading Cancel a training job saves its checkpoint and model folder: seconds, not ms


def slide_source(layer):
    """What the worker process opens for an image layer: the file it came from (our reader's source, else
    napari's ``layer.source.path``), else the layer's pixels as numpy (one array, or one per level)."""
    source = image_source(layer)
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    path = getattr(getattr(layer, "source", None), "path", None)
    if path:
        return str(path)
    if layer.multiscale:
        return [np.asarray(level) for level in layer.data]
    return np.asarray(layer.data)


def label_array(layer) -> np.ndarray:
    """A Labels layer's full-resolution labels as a numpy snapshot (painting may go on while a job runs)."""
    data = layer.data[0] if layer.multiscale else layer.data
    return np.array(data, copy=True)


def chosen_folder(edit, what: str) -> str:
    """The folder name typed under 'save to' (a `form.PathEdit`); ValueError naming `what` when none is chosen."""
    text = edit.value
    if not text or Path(text) == Path("."):
        raise ValueError(f"Choose a folder name under 'save to' for {what}.")
    return text


class TrainingTab(QWidget):
    """Shared parts of a tab that runs one training job: the image picker (first row of the ``data`` section),
    Start/Cancel, the status line and the live plot (pinned under the settings), the worker job."""

    description = "training"
    target = ""  # "module:function" run in the engine worker process with the `_prepare` dict
    _read_outputs = None  # optional: result -> result, run off the GUI thread after the job (reads stores)
    plot_keys: tuple[str, ...] = ("loss",)  # history columns drawn in the live plot

    def __init__(self, viewer, xlabel: str, right_axis=(), start_text: str = "Start"):
        super().__init__()
        self.viewer = viewer
        self.image = LayerPicker(viewer, lambda: layers_of(viewer, "image"))
        self.data = Section("Data")
        self.data.row("image", self.image)
        buttons = RunButtons(start_text)
        self.start_btn, self.cancel_btn = buttons.run, buttons.cancel
        self.status = StatusLine()
        self.plot = CurvePlot(xlabel=xlabel, right_axis=right_axis)
        self.run_box = Section("Run")
        for w in (buttons, self.status, self.plot):
            self.run_box.add(w)
        self.job: EngineJob | None = None
        self.result = None
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn.clicked.connect(self.cancel)

    tooltips: dict[str, str] = {}  # control attribute -> plain-words help (subclasses add theirs)
    _common_tips = {
        "image": "The slide layer to learn from.",
        "start_btn": "Start training in the background; napari stays usable.",
        "cancel_btn": "Stop after the current step; what was learnt so far is kept.",
        "status": "What the training is doing now.",
    }

    def _finish_layout(self, sections: list) -> None:
        """``sections`` (the ``data`` section first) scroll; Start, Cancel, the status and the plot stay pinned."""
        set_tips(self, {**self._common_tips, **self.tooltips})
        dock_layout(self, sections, [self.run_box])

    # subclasses: `_prepare()` on the GUI thread -> the picklable dict `target` gets
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
        job = self._make_job(kwargs)
        job.recorded.connect(self._on_row)
        job.progressed.connect(self.status.progress)  # EngineJob sends no line after its outcome
        job.succeeded.connect(self._on_done)
        job.cancelled.connect(self._on_cancelled)
        job.failed.connect(self._on_failed)
        job.ended.connect(self._on_ended)
        self.start_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.status.setText("starting...")
        self.job = job.start()
        return job

    def cancel(self, *_) -> None:
        if self.job is not None:
            self.job.cancel()  # its progress line says "cancelling…" until the job ends

    def _make_job(self, kwargs: dict) -> EngineJob:
        """The job for one run (not started): `target` in the engine worker process, with records."""
        return ProcessJob(self.target, args=(kwargs,), description=self.description, unit="steps",
                          records=True, background=self._read_outputs, wrap_up_s=WRAP_UP_S)

    def _on_row(self, row: dict) -> None:
        x = row.get("epoch", row.get("step", 0))
        for key in self.plot_keys:
            if isinstance(row.get(key), (int, float)):
                self.plot.append(key, x, row[key])

    def _on_done(self, result) -> None:
        self.finished_at = time.perf_counter()  # the job's end, before any result layer is built
        self.result = result
        self.status.setText("done")

    def _on_cancelled(self, result) -> None:
        """``result`` is None when the worker process had to be stopped before the job returned."""
        self.finished_at = time.perf_counter()
        self.result = result
        self.status.setText("cancelled" if result is not None else
                            "cancelled; the worker was stopped before it saved anything")

    def _on_failed(self, message: str) -> None:
        self.status.setText("failed")
        show_error(message)

    def _on_ended(self) -> None:
        self.start_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.status.idle()
        self.plot.redraw()

