"""Small engine jobs that follow the worker-process protocol (`engine/process_child.py`) without torch.

The widget tests run them in the real engine worker process to check its guarantees: records in order
before the outcome, cancel, the kill fallback, a crashed worker, answers that cannot be sent.
"""

from __future__ import annotations

import os
import time

import numpy as np


def stepped(steps: int, progress=None, cancel=None, on_record=None, step_s: float = 0.01, wrap_up_s: float = 0.0):
    """``steps`` steps; after each: ``progress(step, steps)`` and the record ``{"step", "loss", "pid"}``
    (loss = 1 / step). A cancel stops at the next step after ``wrap_up_s`` seconds of "saving"."""
    rows = []
    for step in range(1, steps + 1):
        if cancel is not None and cancel():
            time.sleep(wrap_up_s)
            return {"cancelled": True, "steps_done": len(rows), "pid": os.getpid(), "rows": rows}
        time.sleep(step_s)
        row = {"step": step, "loss": 1.0 / step, "pid": os.getpid(), "image": np.full((2, 2), step, np.uint8)}
        rows.append({"step": step, "loss": row["loss"]})
        if progress is not None:
            progress(step, steps)
        if on_record is not None:
            on_record(row)
    return {"cancelled": False, "steps_done": len(rows), "pid": os.getpid(), "rows": rows}


def ignores_cancel(seconds: float, progress=None, cancel=None, on_record=None):
    """Reports once, then runs ``seconds`` without ever reading the cancel flag."""
    if progress is not None:
        progress(1, 2)
    time.sleep(seconds)
    return {"cancelled": False, "pid": os.getpid()}


def fails_with(message: str, progress=None, cancel=None, on_record=None):
    """A user error: the engine's one sentence."""
    raise ValueError(message)


def crashes(progress=None, cancel=None, on_record=None):
    """The worker process dies under the job (as a segfault or an out-of-memory kill would end it)."""
    if progress is not None:
        progress(1, 2)
    time.sleep(0.2)  # the progress event leaves the queue before the process ends
    os._exit(3)


def unpicklable_result(progress=None, cancel=None, on_record=None):
    """A result that cannot be sent back to the GUI process."""
    return {"lock": __import__("threading").Lock()}
