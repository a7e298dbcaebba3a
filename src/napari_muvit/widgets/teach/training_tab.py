"""What every teaching tab shares: start/cancel, status line, live metric plot, the worker job.

A tab reads its inputs on the GUI thread (`_prepare`), runs the engine in an `EngineJob` thread (`_run`),
relays the per-step numbers to the live plot through a queued Qt signal, and shows the result (`_on_done`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QWidget

from napari_muvit.widgets.form import LayerPicker, RunButtons, Section, StatusLine, dock_layout, set_tips
from napari_muvit.widgets.image_layers import layers_of
from napari_muvit.widgets.plots import CurvePlot
from napari_muvit.widgets.workers import EngineJob, preload_torch

_WARMED_UP = False
_WARM_LOCK = threading.Lock()


def warm_up() -> None:
    """Import torch and the training loops once per process, on the calling worker thread.

    Never on the GUI thread: importing torch holds the GIL for seconds (measured: the Teach dock froze
    6.9 s while it opened). torch's first optimiser step imports `torch._dynamo` (1-2 s), done here too
    so it does not stall the middle of a run. One lock: two threads importing torch at once can see a
    half-initialised module. The shared libraries are loaded first with the GIL released (`preload_torch`).
    """
    global _WARMED_UP
    with _WARM_LOCK:
        if not _WARMED_UP:
            preload_torch()
            import torch._dynamo  # noqa: F401

            import napari_muvit.engine.training  # noqa: F401

            _WARMED_UP = True


def chosen_folder(edit, what: str) -> str:
    """The folder name typed under 'save to' (a `form.PathEdit`); ValueError naming `what` when none is chosen."""
    text = edit.value
    if not text or Path(text) == Path("."):
        raise ValueError(f"Choose a folder name under 'save to' for {what}.")
    return text


class MetricRelay(QObject):
    """Carries `{name: value, "step": x}` rows from a training thread to the GUI thread (queued signal)."""

    row = Signal(object)


class TrainingTab(QWidget):
    """Shared parts of a tab that runs one training job: the image picker (first row of the ``data`` section),
    Start/Cancel, the status line and the live plot (pinned under the settings), the worker job."""

    description = "training"
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
        self.relay = MetricRelay()
        self.relay.row.connect(self._on_row)
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

        def work(progress, cancel):
            warm_up()  # the first run of the session imports torch here, off the GUI thread
            return self._run(kwargs, progress, cancel)

        job = EngineJob(work, description=self.description, unit="steps")
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
        self.status.setText("done")

    def _on_cancelled(self, result) -> None:
        self.finished_at = time.perf_counter()
        self.result = result
        self.status.setText("cancelled")

    def _on_failed(self, message: str) -> None:
        self.status.setText("failed")
        show_error(message)

    def _on_ended(self) -> None:
        self.start_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.status.idle()
        self.plot.redraw()

