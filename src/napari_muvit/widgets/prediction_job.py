"""A prediction as a job: where it runs, live previews of finished tiles, and its outputs read off the GUI thread.

Slides opened from a file run in the engine worker process (`ProcessJob`); layers that only live in
this process's memory run in a worker thread (`EngineJob`). Either way the GUI thread gets ready-made
layer tuples: small outputs are read into memory by the worker side, big ones stay lazy (dask over the
store's multiscale levels, so napari only reads what is on screen).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engine_process import ProcessJob
from .preview_view import PREVIEW_SIDE
from .results import read_preview, store_layers, store_meta
from .workers import EngineJob

PREDICT_TARGET = "napari_muvit.engine.predict:predict"
PREVIEW_INTERVAL_S = 1.0
MATERIALIZE_MAX_PX = 2048 * 2048  # level-0 outputs up to this many pixels are handed to napari as numpy


@dataclass
class Outputs:
    """What a finished (or cancelled) run shows: layer tuples and ROI rows, built off the GUI thread."""

    store: Path
    result: object = None  # engine PredictionResult (None when the worker process was stopped)
    layers: list = field(default_factory=list)
    rois: tuple | None = None  # (ROI shapes layer tuple, roi_view.RankedRois)
    roi_error: str | None = None
    task: str | None = None  # the store's task, read here so the GUI thread need not reopen the store


def _predict_in_thread(recipe, progress=None, cancel=None, pyramid=None):
    from napari_muvit.engine.predict import predict

    return predict(recipe, progress=progress, cancel=cancel, pyramid=pyramid)


def materialize_small(tuples: list, max_px: int) -> list:
    """Small outputs -> level 0 as one numpy array (napari then swaps the data of the preview layer
    instead of building a new layer, which costs the GUI thread far more than the pixels)."""
    out = []
    for data, kwargs, kind in tuples:
        arrays = data if isinstance(data, list) else [data]
        plane = arrays[0].shape[-3:-1] if kwargs.get("rgb") else arrays[0].shape[-2:]  # (Y, X)
        if int(np.prod(plane)) <= max_px:
            data = np.asarray(arrays[0])
            kwargs = dict(kwargs, multiscale=False)
        out.append((data, kwargs, kind))
    return out


def load_outputs(store, result=None, origin_offset=(0.0, 0.0), pixel_size=None, complete=None,
                 max_px: int | None = None) -> Outputs:
    """Layer tuples (+ ranked ROIs) of a store; run on the worker side. Level-0 outputs up to ``max_px``
    (default `MATERIALIZE_MAX_PX`) come as one numpy array, larger ones as a lazy pyramid."""
    max_px = MATERIALIZE_MAX_PX if max_px is None else max_px
    from .roi_view import roi_layer_and_table

    store = Path(store)
    if not (store / "zarr.json").exists():
        return Outputs(store, result)
    if complete is None and result is not None:
        complete = bool(getattr(result, "complete", False))
    tuples = materialize_small(store_layers(store, complete=complete, origin_offset=origin_offset), max_px)
    for _, kwargs, _ in tuples:
        kwargs["metadata"]["muvit"]["output"] = True
    rois, roi_error = None, None
    task = store_meta(store).get("task")
    if task == "encoder":  # feature overviews have no score to rank by
        return Outputs(store, result, tuples, task=task)
    try:
        tup, table = roi_layer_and_table(store, pixel_size=pixel_size, origin_offset=origin_offset)
        if tup is not None:
            tup[1]["metadata"]["muvit"]["output"] = True
            rois = (tup, table)
    except (ValueError, FileNotFoundError) as exc:
        roi_error = str(exc)
    return Outputs(store, result, tuples, rois, roi_error, task=task)


def start_split(resume: bool, skipped: int | None = None):
    """``start_counts`` for a prediction job: the engine's first report counts background tiles (and, when
    resuming, the tiles of the earlier run) as done. A fresh run computed none of them; a resumed one
    skips the ``skipped`` background tiles of the earlier run (unknown: all count as done before)."""
    if not resume:
        return lambda done: (done, 0)
    known = int(skipped or 0)
    return lambda done: (min(known, done), done - min(known, done))


def make_prediction_job(recipe, pyramid=None, origin_offset=(0.0, 0.0), pixel_size=None, on_preview=None,
                        use_process: bool = True, skipped_before: int | None = None) -> EngineJob:
    """The job for ``recipe``. ``pyramid``: an in-memory `Pyramid` (None when ``recipe.source`` is a
    file). ``on_preview(dict)`` is called from the worker side about once a second with the finished
    part of the store (``probs (K, h, w)``, ``labels (h, w)``, ``stride``, ``meta``, ``label_colors``).
    ``skipped_before``: background tiles of the earlier run a resumed recipe continues."""
    last = [0.0]
    reading = threading.Lock()

    def read_and_send():
        try:
            got = read_preview(recipe.out, max_side=PREVIEW_SIDE)
            if got is not None:
                on_preview(got)
        finally:
            reading.release()

    def preview(done, total):
        # reads on its own thread: progress (and cancel) handling never waits for a preview
        now = time.perf_counter()
        if on_preview is None or now - last[0] < PREVIEW_INTERVAL_S or done >= total:
            return
        if not Path(recipe.out, "0").exists() or not reading.acquire(blocking=False):
            return
        last[0] = now
        threading.Thread(target=read_and_send, name="muvit-preview", daemon=True).start()

    def background(result):
        return load_outputs(recipe.out, result, origin_offset, pixel_size)

    common = dict(description="MuViT predict", on_progress=preview, background=background,
                  start_counts=start_split(bool(recipe.resume), skipped_before))
    if pyramid is None and use_process:
        return ProcessJob(PREDICT_TARGET, args=(recipe,), **common)
    return EngineJob(_predict_in_thread, args=(recipe,), kwargs={"pyramid": pyramid}, **common)
