"""Run `predict` on dask.distributed workers: a local cluster (``workers=N``) or an existing one (``scheduler=``).

The client creates the store and keeps the `TileBook` (the only writer of the state file). Workers open the
slide and load the model once per process (`_worker_context` caches them), run whole batches, write their
tiles' scratch predictions or chunks straight into the shared store, and return only per-tile scores.
Blending tasks for a chunk are submitted once its 3 x 3 neighbourhood is predicted. Tasks are retried
(``retries=2``); a lost worker loses no finished tile, since finished work is on disk and in the state file.
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
from .predict import PredictionResult, conclude, open_run, result_of
from .recipe import Recipe
from .store import PREDICTED, OutputStore, prepare_output
from .tileops import commit_batch, finalise_tiles, read_batch, run_batch

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


def _worker_finalise(payload: dict, jobs: list) -> dict:
    _injected_failure("finalise")
    ctx, store = _worker_context(payload)
    return finalise_tiles(ctx, store, [(tuple(t), [tuple(n) for n in nbrs]) for t, nbrs in jobs])


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
    """Submit batches, then blending jobs as neighbourhoods complete; returns True when cancelled."""
    if progress:
        progress(book.finished, book.total)
    blend = ctx.output.mode == "blend"
    futures = {}
    queued: set = set()
    pending = as_completed()
    for batch in book.pending_batches():
        wanted = [t for t in batch if book.needs_model(t)]
        f = client.submit(_worker_batch, payload, batch, wanted, retries=RETRIES, pure=False)
        futures[f] = ("batch", wanted)
        pending.add(f)
    if blend:  # chunks already ready after a resume
        predicted = [tuple(int(v) for v in t) for t in np.argwhere(book.state == PREDICTED)]
        _submit_finalise(client, payload, book, book.ready(predicted), futures, pending, queued)
    for f in pending:
        kind, _ = futures.pop(f)
        result = f.result()
        if kind == "batch":
            if blend:
                book.mark_predicted(list(result))
                _submit_finalise(client, payload, book, book.ready(book.affected(result)), futures, pending, queued)
            else:
                for t, scores in result.items():
                    book.mark_done(t, scores)
        else:
            for t, scores in result.items():
                book.mark_done(t, scores)
        book.save()
        if progress:
            progress(book.finished, book.total)
        if cancel is not None and cancel():
            client.cancel(list(futures))
            return True
    return False


def _submit_finalise(client, payload, book, ready, futures, pending, queued):
    jobs = [(t, book.present_neighbours(*t)) for t in ready if t not in queued]
    for k in range(0, len(jobs), 8):  # a few chunks per task keeps scheduler overhead low
        chunk = jobs[k : k + 8]
        queued.update(t for t, _ in chunk)
        f = client.submit(_worker_finalise, payload, chunk, retries=RETRIES, pure=False)
        futures[f] = ("finalise", [t for t, _ in chunk])
        pending.add(f)
