"""`predict`: run a model over a region of a slide into a resumable OME-Zarr store.

Pipeline: tile grid -> prefetcher thread (crops, normalisation) -> batched model -> stitcher thread (tile
scores, band accumulation) -> writer threads (complete bands -> whole chunks) -> store (`engine/stitch.py`). Napari-free and callback driven: ``progress(done, total)`` after every
batch, ``cancel()`` polled between batches (a cancelled run leaves a store that ``resume=True`` finishes).
"""

from __future__ import annotations

import time

from . import safety
from .context import resolve
from .device import configure_threads, io_threads
from .prefetch import Prefetcher
from .recipe import Recipe
from .run import (  # noqa: F401  (PredictionResult, open_run, ... keep their engine.predict import path)
    PCA_SAMPLE_TILES,
    TABLE_ON_STOP_MAX_TILES,
    PredictionResult,
    check_layout,
    conclude,
    finish,
    fit_feature_pca,
    open_run,
    result_of,
)
from .store import prepare_output
from .tileops import BandWriter, BufferPool, commit_batch, read_batch, run_batch


def predict(recipe: Recipe, progress=None, cancel=None, *, model=None, pyramid=None) -> PredictionResult:
    """Predict ``recipe`` into ``recipe.out``.

    progress : ``callable(done, total)`` in tiles (background tiles count as done).
    cancel : ``callable() -> bool`` polled between batches; True stops the run, leaving a resumable store.
    model / pyramid : an already loaded model (with ``.card``) or opened `Pyramid`, instead of
    ``recipe.model`` / ``recipe.source`` (the widgets pass what the viewer already holds).
    """
    if not isinstance(recipe, Recipe):
        raise ValueError("predict needs a Recipe; build one with Recipe(source=..., model=..., out=...).")
    recipe.validate()
    if recipe.workers or recipe.scheduler:
        from .distributed import predict_distributed

        return predict_distributed(recipe, progress=progress, cancel=cancel)
    t0 = time.perf_counter()
    configure_threads()
    ctx = resolve(recipe, model=model, pyramid=pyramid)  # every input check before touching the output
    resuming = prepare_output(recipe.out, recipe.resume, recipe.overwrite)
    store, book = open_run(ctx, resuming, recipe.normalization is not None)
    try:
        cancelled = _run_local(ctx, store, book, progress, cancel)
        conclude(ctx, store, book, cancelled)
    finally:  # a run that fails frees its store for the next one (a killed run's lock is stale)
        safety.release_lock(store.path)
    return result_of(ctx, store, book, cancelled, time.perf_counter() - t0)


# ---- the in-process loop -----------------------------------------------------------------------------
def _run_local(ctx, store, book, progress, cancel) -> bool:
    """Returns True when cancelled. Reads run ahead in a prefetch thread; stitching and writing run behind in
    the `BandWriter` threads, so the model (or the GPU feeding it) is the only thing this thread waits for."""
    if progress:
        progress(book.finished, book.total)
    blend = ctx.output.mode == "blend"
    threads = int(ctx.recipe.extra.get("io_threads") or io_threads(ctx.device))
    pool = BufferPool(pinned=ctx.device.type == "cuda")  # input batches are reused, not allocated per batch
    writer = BandWriter(ctx, store, book.state, book.written, workers=threads, open_bands=book.open_bands,
                        release=pool.give) if blend else None
    prefetch = Prefetcher(lambda b: read_batch(ctx, b, pool), book.pending_batches(), workers=threads)
    cancelled = failed = False

    def record(events):
        for kind, key, scores in events:
            if kind == "band":
                book.band_written(key)
            elif kind == "open":
                book.kept_open.append(key)
            else:
                book.mark_predicted(key, scores)

    try:
        for batch, (x, bbox) in prefetch:
            if cancel is not None and cancel():
                cancelled = True
                break
            wanted = [t for t in batch if book.needs_model(t)]
            # blend: probabilities stay on the device (on a CPU in a batch tensor from the pool)
            outputs = run_batch(ctx, x, bbox, batch, on_device=blend, buffers=pool)
            if blend:
                keep = [b for b, t in enumerate(batch) if t in set(wanted)]
                # beside a GPU the input may still be copying (non-blocking) until the batch is stitched
                async_copy = ctx.device.type == "cuda"
                whole = len(keep) == len(batch)
                # the probabilities' tensor goes back to the pool once the stitcher has added them
                writer.submit([batch[b] for b in keep], outputs if whole else outputs[keep],
                              keepalive=(x if async_copy else None, outputs if whole else None))
                if not async_copy:
                    pool.give(x)  # the model has read it
                if not whole:
                    pool.give(outputs)  # copied by the selection above
                record(writer.collect())
            else:
                record(("scores", t, s) for t, s in commit_batch(ctx, store, batch, outputs, wanted).items())
                pool.give(x)
            book.save()
            if progress:
                progress(book.finished, book.total)
    except BaseException:
        failed = True
        raise
    finally:
        prefetch.close()
        if writer is not None:
            if cancelled:
                book.kept_open = []
            record(writer.close(complete=not cancelled and not failed, keep_open=cancelled))
    if not cancelled and cancel is not None and cancel() and not book.complete:
        cancelled = True
    book.save(force=True)
    if progress:
        progress(book.finished, book.total)
    return cancelled
