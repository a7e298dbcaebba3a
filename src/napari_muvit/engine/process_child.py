"""Child side of the engine worker process (no Qt, no napari: imported by a spawned interpreter).

The child serves one task at a time from ``tasks``: ``(job_id, "module:function", args, kwargs)``. It calls
``function(*args, progress=..., cancel=..., **kwargs)``, sends ``(job_id, "progress", (done, total))``
events while it runs, and ends every task with exactly one ``"result"``, ``"user_error"`` (the engine's
sentence) or ``"error"`` (type, message and traceback text) event. ``cancel`` reads a shared flag that
the parent sets. ``None`` on ``tasks`` stops the child. Results travel as plain objects (`plain`).
"""

from __future__ import annotations

import dataclasses
import importlib
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


def serve(tasks, events, cancel_flag) -> None:
    """Child main loop."""
    import threading

    threading.Thread(target=_exit_with_parent, name="muvit-parent-watch", daemon=True).start()
    while True:
        item = tasks.get()
        if item is None:
            return
        job_id, target, args, kwargs = item

        def progress(done, total, _id=job_id):
            events.put((_id, "progress", (int(done), int(total))))

        try:
            fn = resolve_target(target)
            if target.endswith(":warm_up"):
                result = fn()
            else:
                result = fn(*args, progress=progress, cancel=cancel_flag.is_set, **kwargs)
        except USER_ERRORS as exc:
            events.put((job_id, "user_error", str(exc)))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent, nothing is lost
            events.put((job_id, "error", (type(exc).__name__, str(exc), traceback.format_exc())))
        else:
            try:
                events.put((job_id, "result", plain(result)))
            except Exception as exc:  # noqa: BLE001 - an unpicklable result must still end the task
                events.put((job_id, "error", (type(exc).__name__, str(exc), traceback.format_exc())))
