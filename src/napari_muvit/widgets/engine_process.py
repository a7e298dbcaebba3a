"""The persistent engine worker process: `ProcessJob` runs an engine job there (see `widgets/workers.py`).

One spawned process per session and purpose (``engine_process(name)``: ``"engine"`` for predictions and
training, ``"probe"`` for the attention probe, so that a click is never queued behind a long run), started
on first use (or early by ``warm()``), holds torch and the engine so the GUI's interpreter lock stays free;
jobs reach it through queues, progress and outcomes come back on a listener thread and are handed to the
job's Qt signals. A job made with ``records=True`` also
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
    first deadline. ``process``: which worker process runs it (`engine_process`).
    """

    _rearm = Signal(int)  # listener thread -> GUI thread: restart the kill timer with this many ms
    _requeue = Signal()  # listener thread -> GUI thread: submit again (its worker was restarted)

    def __init__(self, fn: str, *args, wrap_up_s: float | None = None, process: str = "engine", **kwargs):
        super().__init__(fn, *args, **kwargs)
        self.wrap_up_s = wrap_up_s
        self.process = process
        self.stopping_at: float | None = None  # when the job read the cancel flag (perf_counter)
        self.worker_pid: int | None = None  # the worker process that runs it, once it started there
        self.process_id: int | None = None  # its id in the worker's task queue

    def _launch(self) -> None:
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill_if_running)
        self._rearm.connect(self._kill_timer.start)
        self._requeue.connect(self._submit)
        self._submit()

    def _submit(self) -> None:
        engine_process(self.process).submit(self)  # on the GUI thread: starting a worker swaps __main__ for a moment

    def cancel(self) -> None:
        super().cancel()
        if engine_process(self.process).cancel(self):  # running in the worker: it has this long to read the flag
            self._kill_timer.start(int(KILL_AFTER_CANCEL_S * 1000))

    def _stopping(self) -> None:
        """Listener thread: the job read the cancel flag and is wrapping up."""
        self.stopping_at = time.perf_counter()
        if self.wrap_up_s is not None:
            self._rearm.emit(int(self.wrap_up_s * 1000))

    def _kill_if_running(self) -> None:
        if self.started_at is not None and not self._finished.is_set():  # the process has not answered
            engine_process(self.process).kill(self)  # only if this job is the one the worker runs


class EngineProcess:
    """The persistent spawned worker process and the thread that listens to its events.

    The worker runs one job at a time, in the order submitted (a prediction started while the teach dock
    trains waits for the training). Cancel is per job (the ids of cancelled jobs are shared with the
    worker): a job waiting in the queue ends at once as cancelled and is skipped by the worker; only the
    job the worker runs is ever terminated, and jobs still waiting then go to the restarted worker. The
    process is started on first use (``warm()`` starts it early) and restarted after a kill or a crash.
    """

    def __init__(self, name: str = "engine"):
        import multiprocessing as mp

        self.name = name
        self._ctx = mp.get_context("spawn")  # fork would copy Qt and the GUI's threads
        self._process = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._jobs: dict[int, ProcessJob] = {}
        self._cancelled = None  # shared array: ids of the latest cancelled jobs (ring of CANCEL_SLOTS)
        self._slot = 0
        self.running_id: int | None = None  # the job the worker runs now (its "started" event arrived)

    def _ensure(self):
        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            from napari_muvit.engine import process_child

            self._tasks = self._ctx.Queue()
            self._events = self._ctx.Queue()
            self._cancelled = self._ctx.Array("q", [-1] * CANCEL_SLOTS)
            self.running_id = None
            self._process = self._ctx.Process(target=process_child.serve, name=f"napari-muvit-{self.name}",
                                              args=(self._tasks, self._events, self._cancelled), daemon=True)
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
        job_id = next(self._ids)
        job.process_id = job_id
        self._jobs[job_id] = job
        self._tasks.put((job_id, job._fn, job._args, job._kwargs, {"records": job.records}))

    def cancel(self, job: ProcessJob) -> bool:
        """GUI thread: tell the worker that ``job`` is cancelled. True if the worker runs it now; a job still
        waiting in the queue ends here as cancelled (result None) and the worker will skip it."""
        job_id = job.process_id
        with self._lock:
            if self._cancelled is not None and job_id is not None:
                self._cancelled[self._slot % CANCEL_SLOTS] = job_id
                self._slot += 1
        if job_id is None or job_id == self.running_id:
            return job_id is not None
        if self._jobs.pop(job_id, None) is not None:
            # worker side as for any outcome (its `background` may read outputs): never on the GUI thread
            threading.Thread(target=job._finish, args=("result", None), name="muvit-cancelled", daemon=True).start()
        return False

    def kill(self, job: ProcessJob) -> None:
        """Terminate the process under a job that ignored its cancel request; the job ends as cancelled.
        Nothing happens unless ``job`` is the one the worker runs."""
        with self._lock:
            process = self._process
        if job.process_id is None or job.process_id != self.running_id:
            return
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
                if kind in ("progress", "record", "stopping", "started"):
                    continue
                kind, payload = "error", (type(exc).__name__, f"the worker's answer could not be read: {exc}", "")
            if kind == "started":
                self.running_id, job.worker_pid = job_id, payload
                continue
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
            if self.running_id == job_id:
                self.running_id = None
            if kind == "error":
                name, message, text = payload
                log.error("MuViT job %r failed in the worker process:\n%s", job.description, text)
                payload = f"{name}: {message}"
            job._finish(kind, payload)

    def _process_ended(self, process) -> None:
        """The process is gone: the job it ran ends (cancelled if asked to, else failed); jobs that were
        still waiting in its queue go to a new process."""
        running, waiting = self.running_id, []
        self.running_id = None
        for job_id in sorted(self._jobs):
            job = self._jobs.pop(job_id, None)
            if job is None:
                continue
            if job.cancel_requested:
                job._finish("result", None)
            elif job_id != running:
                waiting.append(job)
            else:
                job._finish("user_error", f"the MuViT worker process stopped unexpectedly (exit code "
                                          f"{process.exitcode}); run again to continue where it stopped.")
        for job in waiting:
            job._requeue.emit()

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


CANCEL_SLOTS = 16  # cancelled job ids the worker can see at once (far more than jobs ever queued)
_ENGINE_PROCESSES: dict[str, EngineProcess] = {}


def engine_process(name: str = "engine") -> EngineProcess:
    """The session's worker process manager called ``name`` (created on first use)."""
    if name not in _ENGINE_PROCESSES:
        _ENGINE_PROCESSES[name] = EngineProcess(name)
    return _ENGINE_PROCESSES[name]


def warm_when_shown(owner, name: str = "engine") -> None:
    """``engine_process(name).warm()`` on the event loop's next turn, i.e. after napari has added and shown
    the dock ``owner`` that asks for it (spawning the process takes ~50 ms of the GUI thread); never once
    ``owner`` is deleted (its timer goes with it)."""
    timer = QTimer(owner)
    timer.setSingleShot(True)
    timer.timeout.connect(lambda: engine_process(name).warm())
    timer.start(0)
