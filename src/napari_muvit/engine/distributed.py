"""Run `predict` on dask.distributed workers: a local cluster (``workers=N``) or an existing one (``scheduler=``).

The client creates the store and keeps the `TileBook` (the only writer of the state file). Workers open the
slide and load the model once per process (`_worker_context` caches them), run whole batches, write their
tiles' scratch predictions (or feature chunks) straight into the shared store, and return only per-tile
scores. A band task (`tileops.finalise_band`) stitches and writes one output band once every tile whose crop
overlaps it is predicted: one writer per band, hence per chunk file. At most a few batches per worker are in
flight, so the client holds no per-tile list of the slide. Tasks are retried (``retries=2``); a lost worker
loses no finished tile, since finished work is on disk and in the state file.
The store path must be on storage every worker can reach (a shared file system for a remote cluster).

Fault injection (for testing retries): when the environment variable ``NAPARI_MUVIT_INJECT_FAILURES``
names a folder, a worker task of kind ``batch`` / ``finalise`` that finds a file ``<kind>-*`` there deletes
it and fails, so each file makes exactly one task fail once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from .book import TileBook
from .context import resolve
from .recipe import Recipe
from .run import PredictionResult, conclude, open_run, result_of
from .safety import check_scheduler_reachable
from .store import BACKGROUND, DONE, PREDICTED, OutputStore, prepare_output
from .tileops import commit_batch, finalise_band, read_batch, run_batch

_CACHE: dict = {}
RETRIES = 2


def _worker_context(payload: dict):
    """(ctx, store) for this worker process, built once per payload (slide opened, model loaded)."""
    key = json.dumps(payload, sort_keys=True, default=str)
    if _CACHE.get("key") != key:
        import torch

        if payload.get("threads"):
            torch.set_num_threads(int(payload["threads"]))
        ctx = resolve(Recipe.from_dict(payload["recipe"]))
        if payload.get("pca") is not None:
            ctx.output.pca = payload["pca"]
        _CACHE.update(key=key, ctx=ctx, store=OutputStore(payload["recipe"]["out"]))
    return _CACHE["ctx"], _CACHE["store"]


def _injected_failure(kind: str) -> None:
    """Fail this task once per ``<kind>-*`` file in ``$NAPARI_MUVIT_INJECT_FAILURES`` (see module docstring)."""
    folder = os.environ.get("NAPARI_MUVIT_INJECT_FAILURES")
    if not folder or not Path(folder).is_dir():
        return
    for token in sorted(Path(folder).glob(f"{kind}-*")):
        try:
            token.unlink()  # atomic: exactly one task takes each token
        except FileNotFoundError:
            continue
        raise RuntimeError(f"injected failure of a {kind} task ({token.name})")


def _worker_batch(payload: dict, batch: list, wanted: list) -> dict:
    _injected_failure("batch")
    ctx, store = _worker_context(payload)
    batch = [tuple(t) for t in batch]
    x, bbox = read_batch(ctx, batch)
    outputs = run_batch(ctx, x, bbox, batch)
    res = commit_batch(ctx, store, batch, outputs, [tuple(t) for t in wanted])
    return {t: (None if v is None else np.asarray(v, np.float32)) for t, v in res.items()}


def _worker_finalise(payload: dict, band: int, state_rows: np.ndarray, first_row: int) -> int:
    """Stitch and write band ``band``; ``state_rows`` = tile status of rows ``first_row..`` (background map)."""
    _injected_failure("finalise")
    ctx, store = _worker_context(payload)
    state = np.full(ctx.grid.grid_shape, BACKGROUND, np.uint8)
    state[first_row : first_row + len(state_rows)] = state_rows
    return finalise_band(ctx, store, band, state)


def _client(recipe: Recipe):
    from dask.distributed import Client, LocalCluster

    if recipe.scheduler:
        try:
            return Client(recipe.scheduler, timeout="20s"), None
        except OSError as exc:
            raise ValueError(f"cannot reach the dask scheduler {recipe.scheduler!r}; check the address ({exc}).") from None
    cluster = LocalCluster(n_workers=recipe.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster), cluster


def predict_distributed(recipe: Recipe, progress=None, cancel=None) -> PredictionResult:
    """`predict` on dask workers; same store, same result as the in-process run."""
    from dask.distributed import as_completed

    t0 = time.perf_counter()
    local = recipe.replace(workers=0, scheduler=None, resume=False, overwrite=False)
    ctx = resolve(local)  # every input check before touching the output
    if recipe.scheduler:  # an unreachable scheduler is reported before the store is created
        check_scheduler_reachable(recipe.scheduler)
    resuming = prepare_output(recipe.out, recipe.resume, recipe.overwrite)
    store, book = open_run(ctx, resuming, recipe.normalization is not None)
    payload = {"recipe": ctx.recipe.replace(device="cpu" if recipe.workers else recipe.device).to_dict(),
               "pca": store.meta.get("pca"), "threads": 1 if recipe.workers else None}
    client, cluster = _client(recipe)
    cancelled = False
    try:
        cancelled = _drive(client, as_completed, payload, ctx, book, progress, cancel)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    conclude(ctx, store, book, cancelled)
    res = result_of(ctx, store, book, cancelled, time.perf_counter() - t0)
    res.info["workers"] = recipe.workers or recipe.scheduler
    return res


def _drive(client, as_completed, payload, ctx, book: TileBook, progress, cancel) -> bool:
    """Submit batches (a bounded number in flight), then band tasks as bands become complete; True when cancelled."""
    if progress:
        progress(book.finished, book.total)
    blend = ctx.output.mode == "blend"
    book.forget_partial()  # workers stitch from scratch files, not from a cancelled run's partial sums
    grid = ctx.grid
    futures = {}
    pending = as_completed()
    batches = iter(book.pending_batches())
    in_flight = max(2, 3 * len(client.scheduler_info().get("workers", {})) or 4)
    bands = [b for b in ctx.layout.bands() if not book.written[b]] if blend else []
    last = {b: grid.rows_touching(*ctx.layout.band_rows(b))[-1] for b in bands}
    queued_bands: set = set()

    def submit_batches():
        n = sum(1 for kind, _ in futures.values() if kind == "batch")
        while n < in_flight:
            batch = next(batches, None)
            if batch is None:
                return
            wanted = [t for t in batch if book.needs_model(t)]
            f = client.submit(_worker_batch, payload, batch, wanted, retries=RETRIES, pure=False)
            futures[f] = ("batch", wanted)
            pending.add(f)
            n += 1

    def submit_bands():
        for b in bands:
            if b in queued_bands:
                continue
            rows = grid.rows_touching(*ctx.layout.band_rows(b))
            block = book.state[rows.start : last[b] + 1]
            if np.any((block != PREDICTED) & (block != BACKGROUND) & (block != DONE)):
                return  # bands complete top to bottom
            queued_bands.add(b)
            f = client.submit(_worker_finalise, payload, b, block.copy(), rows.start, retries=RETRIES, pure=False)
            futures[f] = ("band", b)
            pending.add(f)

    submit_batches()
    if blend:
        submit_bands()
    for f in pending:
        kind, info = futures.pop(f)
        result = f.result()
        if kind == "batch":
            for t, scores in result.items():
                book.mark_predicted(t, scores)
            submit_batches()
        else:
            book.band_written(info)
            _free_scratch(ctx, book, info)
        if blend:
            submit_bands()
        book.save()
        if progress:
            progress(book.finished, book.total)
        if cancel is not None and cancel():
            client.cancel(list(futures))
            return True
    return False


def _free_scratch(ctx, book, band) -> None:
    """Delete the scratch predictions of tiles that no unwritten band needs any more."""
    store = book.store
    for i in ctx.grid.rows_touching(*ctx.layout.band_rows(band)):
        for j in np.flatnonzero(book.state[i] == DONE):
            store.delete_scratch(i, int(j))
