"""Heavy imports off the GUI thread.

Reading an in-memory image layer as a pyramid needs the slide readers (dask.array and zarr, ~1 s of
importing on a small machine). When a dock opens before anything in the session has imported them (an
image opened by napari's own reader, or made in the console), that import would hold the viewer. Here it
runs in a daemon thread instead, and the dock is called back on the GUI thread when it is done.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer

POLL_MS = 20

_threads: dict[str, threading.Thread] = {}


def _import(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - the caller's own import on the GUI thread raises it with its context
        pass


def imported(module: str) -> bool:
    """True when nothing is left to wait for: this helper's import of ``module`` has finished (if it failed,
    the caller's own import raises the error where it can be reported), or ``module`` was imported before."""
    thread = _threads.get(module)
    if thread is not None:
        return not thread.is_alive()
    return module in sys.modules


def when_imported(module: str, then: Callable[[], None], owner: QObject) -> bool:
    """True when ``module`` is imported already (``then`` is not called). Otherwise import it in a daemon
    thread (one per module, shared by every caller) and call ``then()`` on the GUI thread once it is done,
    unless ``owner`` (a widget) was deleted first; returns False."""
    if imported(module):
        return True
    thread = _threads.get(module)
    if thread is None or not thread.is_alive():
        thread = threading.Thread(target=_import, args=(module,), daemon=True, name=f"import {module}")
        _threads[module] = thread
        thread.start()
    timer = QTimer(owner)  # owned: a closed dock stops waiting

    def check():
        if thread.is_alive():
            return
        timer.stop()
        timer.deleteLater()
        then()

    timer.setInterval(POLL_MS)
    timer.timeout.connect(check)
    timer.start()
    return False
