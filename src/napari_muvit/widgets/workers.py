"""Run engine jobs off the GUI thread, with progress in napari's activity dock and a cancel switch.

An engine job is any callable ``job(progress, cancel) -> result`` that follows the engine's callback
protocol: it calls ``progress(done, total)`` between batches and stops early (returning normally) when
``cancel()`` returns True. ``EngineJob`` runs it in a plain Python thread, so the GUI thread only ever
receives Qt signals (queued, throttled) and never runs model code or reads tiles. User errors
(``ValueError``/``FileNotFoundError``) come back as the engine's one sentence in ``failed``; anything else
comes back as ``"<Type>: <message>"`` and is logged with its traceback, never raised into the GUI.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal

log = logging.getLogger(__name__)

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)
PROGRESS_INTERVAL_S = 0.1  # at most ten GUI updates a second: signals are cheap, repaints are not


def format_rate(done: int, total: int, elapsed_s: float, unit: str = "tiles") -> str:
    """``"12/40 tiles, 3.1 tiles/s, 9 s left"`` (rate and time left once something is done)."""
    text = f"{done}/{total} {unit}"
    if done > 0 and elapsed_s > 0:
        rate = done / elapsed_s
        left = (total - done) / rate if rate > 0 else float("inf")
        text += f", {rate:.1f} {unit}/s, {_duration(left)} left"
    return text


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


class EngineJob(QObject):
    """One engine job on a worker thread.

    Signals (delivered on the GUI thread): ``progressed(done, total, text)``, ``succeeded(result)``,
    ``cancelled(result)`` (the job returned after a cancel request), ``failed(sentence)``, and
    ``ended()`` after any of the three.
    """

    progressed = Signal(int, int, str)
    succeeded = Signal(object)
    cancelled = Signal(object)
    failed = Signal(str)
    ended = Signal()

    def __init__(self, job: Callable[..., Any], description: str = "MuViT", unit: str = "tiles",
                 show_progress: bool = True, parent: QObject | None = None):
        super().__init__(parent)
        self._job = job
        self.description = description
        self.unit = unit
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_emit = 0.0
        self._t0: float | None = None
        self._done0 = 0
        self._pbar = None
        self._show_progress = show_progress
        self.result: Any = None
        self.error: str | None = None
        self.done = 0
        self.total = 0
        self.progressed.connect(self._on_progress)
        self.ended.connect(self._close_progress)

    # ------------------------------------------------------------------ GUI-thread API
    def start(self) -> EngineJob:
        if self._thread is not None:
            raise RuntimeError("an EngineJob runs once; make a new one")
        if self._show_progress:
            self._open_progress()
        self._thread = threading.Thread(target=self._run, name=f"muvit-{self.description}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the job to stop at its next batch boundary."""
        self._cancel.set()
        if self._pbar is not None:
            self._pbar.set_description(f"{self.description}: cancelling")

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Block until the worker thread ended (for scripts and tests); True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ worker thread
    def _run(self) -> None:
        try:
            result = self._job(progress=self._progress, cancel=self._cancel.is_set)
        except USER_ERRORS as exc:
            self.error = str(exc)
            self.failed.emit(self.error)
        except Exception as exc:  # not a user error: log the traceback, show one line
            log.exception("MuViT job %r failed", self.description)
            self.error = f"{type(exc).__name__}: {exc}"
            self.failed.emit(self.error)
        else:
            self.result = result
            (self.cancelled if self._cancel.is_set() else self.succeeded).emit(result)
        finally:
            self.ended.emit()

    def _progress(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self._t0 is None:  # rate counts from the first report (store opening is not tile work)
            self._t0, self._done0 = now, done
        self.done, self.total = int(done), int(total)
        if done < total and now - self._last_emit < PROGRESS_INTERVAL_S:
            return
        self._last_emit = now
        text = format_rate(done - self._done0, total - self._done0, now - self._t0, self.unit)
        if self._done0:
            text += f" ({self._done0} already done)"
        self.progressed.emit(int(done), int(total), text)

    # ------------------------------------------------------------------ activity dock
    def _open_progress(self) -> None:
        try:
            from napari.utils import progress
        except ImportError:  # pragma: no cover - napari is a dependency
            return
        self._pbar = progress(total=0, desc=self.description)

    def _on_progress(self, done: int, total: int, text: str) -> None:
        if self._pbar is None:
            return
        if self._pbar.total != total:
            self._pbar.total = total
        self._pbar.n = done
        self._pbar.set_description(f"{self.description}: {text}")  # refreshes the bar

    def _close_progress(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
