"""Run engine jobs off the GUI thread, with progress for the widget's status line and a cancel switch.

An engine job follows the engine's callback protocol: ``fn(*args, progress=..., cancel=..., **kwargs)``
calls ``progress(done, total)`` between batches and returns early when ``cancel()`` is True. Two ways to
run one, same signals:

* ``ProcessJob`` (predictions and the teach dock's training; `widgets/engine_process.py`): in a persistent spawned worker
  process, so torch and the engine's Python code never hold the GUI's GIL (measured: a worker *thread* left 150-350 ms gaps in a
  10 ms QTimer heartbeat on a 2-core machine, the process stayed under 25 ms; docs/benchmarks.md).
  Jobs run there one after another. Cancel marks the job cancelled in memory shared with the process; if
  the job has not read that 1 s later (a training job that did gets ``wrap_up_s`` to save) the process is
  terminated (the engine's store is resumable after a kill) and restarted for the next job.
* ``EngineJob`` (short jobs, or inputs that cannot be sent to another process): a plain Python thread.

The GUI thread only receives Qt signals (queued, throttled). ``background`` (optional) runs on the
worker side after a result, e.g. to read small outputs into memory, so the GUI only adds layers. User
errors (``ValueError``/``FileNotFoundError``) come back as the engine's one sentence in ``failed``;
anything else as ``"<Type>: <message>"``, logged with its traceback, never raised into the GUI.
A job made with ``records=True`` passes ``on_record=`` to ``fn`` as well; each row it is given reaches the
GUI thread as ``recorded(row)``, in order and before the outcome (training history rows for a live plot).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

log = logging.getLogger(__name__)

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)
# at most four GUI updates a second: signals are cheap, repaints are not (with software OpenGL every
# changed label recomposes the whole window, 30-100 ms on a small machine; measured with heartbeat.py)
PROGRESS_INTERVAL_S = 0.25
KILL_AFTER_CANCEL_S = 1.0  # a process job that ignores the cancel flag this long is terminated


# command-line advice in engine sentences -> what the same step is called in the docks
_GUI_WORDS = [
    (re.compile(r"pass --resume to continue it or choose a new --out"), "choose another folder under 'save to'"),
    (re.compile(r"pass --resume to continue it or --overwrite to replace it"),
     "Run continues a cancelled run with the same settings; otherwise choose another output"),
    (re.compile(r"run again with --resume"), "press Run again with the same settings"),
    (re.compile(r"run again with --overwrite to start over"), "start a new run to start over"),
    (re.compile(r"run without --resume to start a new run"), "start a new run"),
    (re.compile(r"(choose another path or )?pass --overwrite"), "choose another name"),
    (re.compile(r"leave --levels out to continue with the base model's levels"), "choose the base model's levels"),
    (re.compile(r"pass --out OUT\.zarr"), "choose an output"),
    (re.compile(r"--(levels|tile|overlap|region|out)\b"), r"the \1 setting"),
]


def gui_wording(sentence: str) -> str:
    """An engine sentence with command-line advice ("pass --resume") put in the docks' words."""
    for pattern, words in _GUI_WORDS:
        sentence = pattern.sub(words, sentence)
    return sentence


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


PHASES = ("starting", "running", "cancelling", "finishing", "loading", "ended")


@dataclass
class Progress:
    """The one progress state of a job: what its status line shows.

    Units (tiles, steps) are ``skipped`` (never computed: background, outside the mask), ``before``
    (finished by an earlier run that this one continues), ``now`` (finished by this run) or remaining.
    ``todo = total - skipped - before`` is what this run has to compute; the bar shows ``now / todo``.
    ``phase``: starting -> running -> (cancelling) -> finishing (the engine writes its last outputs) ->
    loading (results are read into layers) -> ended.
    """

    unit: str = "tiles"
    total: int = 0
    skipped: int = 0
    before: int = 0
    now: int = 0
    phase: str = "starting"
    rate: float | None = None  # units/s of this run, counted from its first report
    phase_since: float = 0.0  # perf_counter() when the phase began

    @property
    def todo(self) -> int:
        return max(0, self.total - self.skipped - self.before)

    @property
    def remaining(self) -> int:
        return max(0, self.todo - self.now)

    def counts(self) -> str:
        """``"412/1351 tiles"`` plus what was skipped or done before, when any."""
        text = f"{self.now}/{self.todo} {self.unit}"
        extra = []
        if self.skipped:
            extra.append(f"{self.skipped} background {self.unit} skipped")
        if self.before:
            extra.append(f"{self.before} done by the earlier run")
        return text + (f" ({', '.join(extra)})" if extra else "")

    def text(self, now_s: float | None = None) -> str:
        """The status line for the current phase."""
        elapsed = 0.0 if now_s is None else max(0.0, now_s - self.phase_since)
        if self.phase == "starting":
            return "starting…"
        if self.phase == "cancelling":
            return f"cancelling after the current batch… {self.counts()} so far"
        if self.phase == "finishing":
            return f"finishing: all {self.todo} {self.unit} computed, writing the last outputs… {_duration(elapsed)}"
        if self.phase == "loading":
            return f"reading the results into layers… {_duration(elapsed)}"
        text = self.counts()
        if self.rate:
            text += f", {self.rate:.1f} {self.unit}/s, {_duration(self.remaining / self.rate)} left"
        return text

class EngineJob(QObject):
    """One engine job on a worker thread.

    ``fn(*args, progress=, cancel=, **kwargs)``; ``on_progress(done, total)`` and ``background(result)``
    (optional) run on the worker side. Signals (delivered on the GUI thread): ``progressed(done, total,
    text)``, ``succeeded(result)``, ``cancelled(result)`` (returned after a cancel request),
    ``failed(sentence)``, ``ended()`` after any of the three. ``result`` is ``background(result)`` when
    given. ``recorded(row)`` (``records=True``): each row the job's function handed to ``on_record``, in
    order, never after the outcome.

    Progress has one source, ``state`` (a `Progress`), updated and turned into text on the GUI thread, so
    a late report never overwrites "cancelling…". The outcome reaches the GUI thread as one queued event
    that ends the state first, then emits the outcome signal and ``ended``: no ``progressed`` is ever
    delivered after ``succeeded``/``cancelled``/``failed`` (a straggling report, a phase or catch-up timer
    firing later), so a widget's final status line stays. ``running`` is True until then (for the GUI
    thread, the job has ended when its outcome was handled); ``join()`` waits for the worker side only.
    ``progressed(now, todo, text)`` carries this run's
    count, what it has to compute and the status line (the one place progress is shown: napari's activity
    dock is not used, as building its bar cost ~0.2 s of the Run click and every update there processed all
    pending events, repaints included).
    ``start_counts(done) -> (skipped, before)`` splits the engine's first report when that report is its
    starting state (the predict engine reports background and resumed tiles as done before any batch);
    without it the first report is already work of this run (the training loops).
    """

    progressed = Signal(int, int, str)
    _reported = Signal(int, int)  # worker -> GUI thread: the engine's (done, total)
    _entered = Signal(str)  # worker -> GUI thread: a new phase
    _outcome = Signal(str, object)  # worker -> GUI thread: ("succeeded"|"cancelled"|"failed", payload)
    _recorded = Signal(object)  # worker -> GUI thread: one row given to on_record
    recorded = Signal(object)
    succeeded = Signal(object)
    cancelled = Signal(object)
    failed = Signal(str)
    ended = Signal()

    def __init__(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
                 description: str = "MuViT", unit: str = "tiles", on_progress: Callable | None = None,
                 background: Callable | None = None,
                 start_counts: Callable[[int], tuple[int, int]] | None = None, records: bool = False,
                 parent: QObject | None = None):
        super().__init__(parent)
        self._fn, self._args, self._kwargs = fn, tuple(args), dict(kwargs or {})
        self.records = records
        self.description = description
        self.unit = unit
        self._on_progress_bg = on_progress
        self._background = background
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_emit = 0.0
        self._t0: float | None = None
        self._done0 = 0
        self._start_counts = start_counts
        self.state = Progress(unit=unit)
        self._phase_timer = QTimer(self)  # finishing/loading: the elapsed seconds keep the line alive
        self._phase_timer.setInterval(1000)
        self._phase_timer.timeout.connect(self._publish)
        self._catch_up = QTimer(self)  # a report dropped by the rate limit is shown shortly after
        self._catch_up.setSingleShot(True)
        self._catch_up.setInterval(int(2 * PROGRESS_INTERVAL_S * 1000))
        self._catch_up.timeout.connect(self._show_latest)
        self._shown = (-1, -1)
        self._finished = threading.Event()  # worker side: the job's function and `background` returned
        self._delivered = False  # GUI thread: the outcome was handed to the widget
        self.result: Any = None
        self.error: str | None = None
        self.done = 0
        self.total = 0
        self.started_at: float | None = None
        self.stopped_at: float | None = None  # when the engine returned (before outputs are read)
        self.cancel_at: float | None = None
        self._reported.connect(self._on_reported)
        self._entered.connect(self._enter)
        self._outcome.connect(self._deliver)
        self._recorded.connect(self._on_recorded)

    # ------------------------------------------------------------------ GUI-thread API
    def start(self):
        if self.started_at is not None:
            raise RuntimeError("a job runs once; make a new one")
        self.started_at = time.perf_counter()
        self.state.phase_since = self.started_at
        self._launch()
        return self

    def _launch(self) -> None:
        self._thread = threading.Thread(target=self._run_thread, name=f"muvit-{self.description}", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Ask the job to stop at its next batch boundary."""
        if self.cancel_at is None:
            self.cancel_at = time.perf_counter()
        self._cancel.set()
        if self.running and self.state.phase in ("starting", "running"):
            self._enter("cancelling")

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        return self.started_at is not None and not self._delivered

    def join(self, timeout: float | None = None) -> bool:
        """Block until the job ended (scripts and tests); True if it did."""
        return self.started_at is None or self._finished.wait(timeout)

    # ------------------------------------------------------------------ worker side
    def _run_thread(self) -> None:
        try:
            extra = {"on_record": self._record} if self.records else {}
            result = self._fn(*self._args, progress=self._progress, cancel=self._cancel.is_set, **extra,
                              **self._kwargs)
        except USER_ERRORS as exc:
            self._finish("user_error", str(exc))
        except Exception as exc:  # not a user error: log the traceback, show one line
            log.exception("MuViT job %r failed", self.description)
            self._finish("error", f"{type(exc).__name__}: {exc}")
        else:
            self._finish("result", result)

    def _finish(self, kind: str, payload) -> None:
        """Worker side: post-process a result, then emit exactly one outcome and ``ended``."""
        self.stopped_at = time.perf_counter()
        if self.total:  # the last count, even one the rate limit held back, arrives before the outcome
            self._reported.emit(self.done, self.total)
        outcome = ("failed", "the job ended without a result")
        try:
            if kind == "result":
                # the engine says whether it stopped early (a cancel after its last batch changes nothing)
                was_cancelled = bool(getattr(payload, "cancelled", self._cancel.is_set()))
                if self._background is not None:
                    self._entered.emit("loading")
                    payload = self._background(payload)
                self.result = payload
                outcome = ("cancelled" if was_cancelled else "succeeded", payload)
            else:
                self.error = gui_wording(str(payload))
                outcome = ("failed", self.error)
        except Exception as exc:  # noqa: BLE001 - post-processing errors end the job like any other
            log.exception("MuViT job %r: handling its result failed", self.description)
            self.error = f"{type(exc).__name__}: {exc}"
            outcome = ("failed", self.error)
        finally:
            self._finished.set()
            self._outcome.emit(*outcome)

    def _deliver(self, kind: str, payload) -> None:
        """GUI thread, the one place a job ends: the progress state is closed (no later report, phase or
        catch-up timer can publish a line), then the widget gets the outcome, then ``ended``."""
        if self._delivered:
            return
        self._phase_timer.stop()
        self._catch_up.stop()
        st = self.state  # the last count, without a line that would replace the widget's final status
        st.now = max(0, self.done - st.skipped - st.before) if self.total else st.now
        st.phase = "ended"
        self._delivered = True
        try:
            getattr(self, kind).emit(payload)
        finally:
            self.ended.emit()

    def _record(self, row) -> None:
        """Worker side: one row for the GUI thread (queued behind the rows before it, ahead of the outcome)."""
        self._recorded.emit(row)

    def _on_recorded(self, row) -> None:
        if not self._delivered:
            self.recorded.emit(row)

    def _progress(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self._t0 is None:  # rate counts from the first report (start-up is not tile work)
            self._t0, self._done0 = now, done
            skipped, before = self._start_counts(int(done)) if self._start_counts else (0, 0)
            self.state.skipped, self.state.before = int(skipped), int(before)
        self.done, self.total = int(done), int(total)
        if self._on_progress_bg is not None:
            try:
                self._on_progress_bg(done, total)
            except Exception:  # noqa: BLE001 - a preview must never stop a run
                log.exception("MuViT job %r: progress hook failed", self.description)
        if done < total and now - self._last_emit < PROGRESS_INTERVAL_S:
            return
        self._last_emit = now
        self._reported.emit(int(done), int(total))

    # ------------------------------------------------------------------ GUI thread: the one progress state
    def _show_latest(self) -> None:
        if (self.done, self.total) != self._shown and self.state.phase not in ("ended", "loading"):
            self._on_reported(self.done, self.total)

    def _on_reported(self, done: int, total: int) -> None:
        if self.state.phase == "ended":
            return
        self._shown = (int(done), int(total))
        self._catch_up.start()
        st = self.state
        st.total = int(total)
        st.now = max(0, int(done) - st.skipped - st.before)
        t = time.perf_counter()
        counted = int(done) - self._done0
        if self._t0 is not None and counted > 0 and t > self._t0:
            st.rate = counted / (t - self._t0)
        if st.phase == "starting":
            st.phase, st.phase_since = "running", t
        if st.phase == "running" and total > 0 and done >= total:
            self._enter("finishing")
            return
        self._publish()

    def _enter(self, phase: str) -> None:
        """GUI thread: a new phase (cancelling is never replaced by a late running report)."""
        st = self.state
        if st.phase == "ended" or (phase == "finishing" and st.phase == "cancelling"):
            return
        st.phase, st.phase_since = phase, time.perf_counter()
        if phase in ("finishing", "loading"):
            self._phase_timer.start()
        self._publish()

    def _publish(self) -> None:
        st = self.state
        if st.phase == "ended":  # after the outcome the widget's own final line stays
            return
        text = st.text(time.perf_counter())
        self.progressed.emit(st.now, st.todo, text)

