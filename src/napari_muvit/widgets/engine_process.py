"""The persistent engine worker process: `ProcessJob` runs an engine job there (see `widgets/workers.py`).

One spawned process per session, started on first use (or early by ``warm()``), holds torch and the
engine so the GUI's interpreter lock stays free; jobs reach it through queues, progress and outcomes come
back on a listener thread and are handed to the job's Qt signals. A job made with ``records=True`` also
gets the rows its function hands to ``on_record`` (training history rows), in order, as ``recorded``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import sys
import threading
import time
import types

from qtpy.QtCore import QTimer, Signal

from napari_muvit.engine.process_child import unpack

from .workers import KILL_AFTER_CANCEL_S, EngineJob

log = logging.getLogger(__name__)


class ProcessJob(EngineJob):
    """An engine job in the persistent worker process. ``fn`` is ``"module:function"``; args, kwargs,
    records and the result must pickle. Same signals and API as `EngineJob`.

    Cancel: the process is terminated if the job has not read the cancel flag ``KILL_AFTER_CANCEL_S``
    after the request. ``wrap_up_s`` (training: saving a checkpoint and a model folder takes seconds) is
    how long a job that did read it may still take to end before it is terminated too; None keeps the
    first deadline.
    """

    _rearm = Signal(int)  # listener thread -> GUI thread: restart the kill timer with this many ms

    def __init__(self, fn: str, *args, wrap_up_s: float | None = None, **kwargs):
        super().__init__(fn, *args, **kwargs)
        self.wrap_up_s = wrap_up_s
        self.stopping_at: float | None = None  # when the job read the cancel flag (perf_counter)

    def _launch(self) -> None:
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill_if_running)
        self._rearm.connect(self._kill_timer.start)
        engine_process().submit(self)

    def cancel(self) -> None:
        super().cancel()
        engine_process().cancel_flag.set()
        self._kill_timer.start(int(KILL_AFTER_CANCEL_S * 1000))

    def _stopping(self) -> None:
        """Listener thread: the job read the cancel flag and is wrapping up."""
        self.stopping_at = time.perf_counter()
        if self.wrap_up_s is not None:
            self._rearm.emit(int(self.wrap_up_s * 1000))

    def _kill_if_running(self) -> None:
        if self.started_at is not None and not self._finished.is_set():  # the process has not answered
            engine_process().kill(self)


class EngineProcess:
    """The persistent spawned worker process and the thread that listens to its events.

    One job at a time (the widgets never start a second while one runs). The process is started on first
    use (``warm()`` starts it early) and restarted after a kill or a crash.
    """

    def __init__(self):
        import multiprocessing as mp

        self._ctx = mp.get_context("spawn")  # fork would copy Qt and the GUI's threads
        self._process = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._jobs: dict[int, ProcessJob] = {}
        self.cancel_flag = None

    def _ensure(self):
        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            from napari_muvit.engine import process_child

            self._tasks = self._ctx.Queue()
            self._events = self._ctx.Queue()
            self.cancel_flag = self._ctx.Event()
            self._process = self._ctx.Process(target=process_child.serve, name="napari-muvit-engine",
                                              args=(self._tasks, self._events, self.cancel_flag), daemon=True)
            with _main_module_hidden():
                self._process.start()
            listener = threading.Thread(target=self._listen, args=(self._process, self._events),
                                        name="muvit-engine-events", daemon=True)
            listener.start()

    def warm(self) -> None:
        """Start the process and import torch + the engine in it, so the first run starts quickly."""
        self._ensure()
        self._tasks.put((0, "napari_muvit.engine.process_child:warm_up", (), {}))

    def submit(self, job: ProcessJob) -> None:
        self._ensure()
        self.cancel_flag.clear()
        job_id = next(self._ids)
        self._jobs[job_id] = job
        self._tasks.put((job_id, job._fn, job._args, job._kwargs, {"records": job.records}))

    def kill(self, job: ProcessJob) -> None:
        """Terminate the process under a job that ignored its cancel request; the job ends as cancelled."""
        with self._lock:
            process = self._process
        if process is not None and process.is_alive():
            log.info("terminating the MuViT worker process (cancel not acknowledged in time)")
            process.terminate()

    def _listen(self, process, events) -> None:
        while True:
            try:
                job_id, kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                if process.is_alive():
                    continue
                self._process_ended(process)
                return
            except (EOFError, OSError):
                self._process_ended(process)
                return
            job = self._jobs.get(job_id)
            if job is None:
                continue  # warm-up
            try:
                payload = unpack(payload)
            except Exception as exc:  # noqa: BLE001 - e.g. a class this process cannot import
                log.exception("MuViT job %r: an answer of the worker process could not be read", job.description)
                if kind in ("progress", "record", "stopping"):
                    continue
                kind, payload = "error", (type(exc).__name__, f"the worker's answer could not be read: {exc}", "")
            if kind == "progress":
                job._progress(*payload)
                continue
            if kind == "record":
                job._record(payload)
                continue
            if kind == "stopping":
                job._stopping()
                continue
            self._jobs.pop(job_id, None)
            if kind == "error":
                name, message, text = payload
                log.error("MuViT job %r failed in the worker process:\n%s", job.description, text)
                payload = f"{name}: {message}"
            job._finish(kind, payload)

    def _process_ended(self, process) -> None:
        """The process is gone: every job it held ends (cancelled if asked to, else failed)."""
        for job_id in list(self._jobs):
            job = self._jobs.pop(job_id)
            if job.cancel_requested:
                job._finish("result", None)
            else:
                job._finish("user_error", f"the MuViT worker process stopped unexpectedly (exit code "
                                          f"{process.exitcode}); run again to continue where it stopped.")

    def shutdown(self) -> None:
        with self._lock:
            if self._process is not None and self._process.is_alive():
                self._tasks.put(None)
                self._process.join(2)
                if self._process.is_alive():
                    self._process.terminate()
            self._process = None


@contextlib.contextmanager
def _main_module_hidden():
    """Start a spawned child without re-running the user's ``__main__`` script in it.

    spawn re-imports the parent's main module in the child; a script that builds a viewer without an
    ``if __name__ == "__main__"`` guard would then open a second napari there. The child only needs
    ``engine.process_child.serve``, which is importable on its own, so the main module is swapped for an
    empty one while the child starts (the GUI thread does not run other Python code meanwhile).
    """
    real = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if real is not None:
            sys.modules["__main__"] = real


_ENGINE_PROCESS: EngineProcess | None = None


def engine_process() -> EngineProcess:
    """The session's engine worker process manager (created on first use)."""
    global _ENGINE_PROCESS
    if _ENGINE_PROCESS is None:
        _ENGINE_PROCESS = EngineProcess()
    return _ENGINE_PROCESS
