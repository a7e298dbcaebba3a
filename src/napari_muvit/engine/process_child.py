"""Child side of the engine worker process (no Qt, no napari: imported by a spawned interpreter).

The child serves one task at a time from ``tasks``: ``(job_id, "module:function", args, kwargs, options)``.
It calls ``function(*args, progress=..., cancel=..., **kwargs)`` (plus ``on_record=...`` when
``options["records"]``) and sends events ``(job_id, kind, payload)`` while it runs:

* ``"started"``: the child's pid, when the task starts (a task the parent cancelled while it waited in
  the queue is not started: it ends with a ``None`` result at once);
* ``"progress"``: ``(done, total)``;
* ``"record"``: one row the job handed to ``on_record`` (a training history row), in the order given;
* ``"stopping"``: once, the first time the job read a set cancel flag (it is wrapping up: the parent
  then waits for it instead of terminating it);

and ends every task with exactly one ``"result"``, ``"user_error"`` (the engine's sentence) or ``"error"``
(type, message and traceback text) event. ``cancel`` is True once the task's id is in ``cancelled``, a
shared array of the ids the parent cancelled. ``None`` on
``tasks`` stops the child. Results and records travel as plain objects (`plain`), pickled here: a payload
that cannot be pickled ends the task with an ``"error"`` event (a record that cannot is dropped and logged)
instead of vanishing in the queue's feeder thread. The parent unpickles them with `unpack`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import sys
import traceback
from types import SimpleNamespace

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


def resolve_target(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def plain(result):
    """Dataclass results -> ``SimpleNamespace`` with the same attributes: unpickling the engine's own
    classes in the GUI process would import torch there (seconds, holding the GIL)."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return SimpleNamespace(**{f.name: getattr(result, f.name) for f in dataclasses.fields(result)})
    return result


def pack(payload) -> bytes:
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes):
    return pickle.loads(data)


def warm_up() -> None:
    """Import what a prediction needs so the first real task starts without the import delay."""
    import torch  # noqa: F401

    import napari_muvit.engine.predict  # noqa: F401


def _exit_with_parent() -> None:
    """End this process when the GUI process is gone (killed or crashed): never leave an orphan
    holding a GPU or the terminal."""
    import multiprocessing
    import os
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os._exit(0)


def serve(tasks, events, cancelled) -> None:
    """Child main loop."""
    import threading

    threading.Thread(target=_exit_with_parent, name="muvit-parent-watch", daemon=True).start()
    while True:
        item = tasks.get()
        if item is None:
            return
        job_id, target, args, kwargs, options = (*item, {})[:5]
        _run_task(events, cancelled, job_id, target, args, kwargs, options or {})


def _run_task(events, cancelled, job_id, target, args, kwargs, options) -> None:
    """One task: its events, then exactly one outcome event."""
    import os

    stopping = []
    if job_id in cancelled[:]:  # cancelled while it waited in the queue
        events.put((job_id, "result", pack(None)))
        return
    events.put((job_id, "started", pack(os.getpid())))

    def progress(done, total):
        events.put((job_id, "progress", pack((int(done), int(total)))))

    def cancel():
        if job_id not in cancelled[:]:
            return False
        if not stopping:  # the job is winding down: tell the parent once
            stopping.append(True)
            events.put((job_id, "stopping", pack(None)))
        return True

    def record(row):
        try:
            data = pack(plain(row))
        except Exception as exc:  # noqa: BLE001 - a record is extra: the job goes on without it
            print(f"napari-muvit worker: dropped a record that cannot be sent ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            return
        events.put((job_id, "record", data))

    try:
        fn = resolve_target(target)
        if target.endswith(":warm_up"):
            result = fn()
        else:
            extra = {"on_record": record} if options.get("records") else {}
            result = fn(*args, progress=progress, cancel=cancel, **extra, **kwargs)
    except USER_ERRORS as exc:
        events.put((job_id, "user_error", pack(str(exc))))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent, nothing is lost
        events.put((job_id, "error", pack((type(exc).__name__, str(exc), traceback.format_exc()))))
    else:
        try:
            data = pack(plain(result))
        except Exception as exc:  # noqa: BLE001 - an unpicklable result must still end the task
            events.put((job_id, "error", pack((type(exc).__name__, f"the result cannot be sent back: {exc}",
                                               traceback.format_exc()))))
        else:
            events.put((job_id, "result", data))
